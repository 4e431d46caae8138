package remote

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/edgepipe/sensorpipe/buffer/atomicfile"
)

// File names under the state directory (the buffer's directory,
// /var/lib/edge-agent on a Pi).
const (
	StateFile    = "fleet-config.json"
	CommandsFile = "fleet-commands.json"
)

// state is what survives a restart: the documents in force and the last
// set that worked, kept as received (the exact bytes, which the signature
// covers, base64 in the file) and verified again at
// load, so a file edited on the SD card is no way around the fleet key.
type state struct {
	V       int              `json:"v"`
	Current map[Level][]byte `json:"current,omitempty"`
	Good    map[Level][]byte `json:"good,omitempty"`
	Trial   bool             `json:"trial,omitempty"`  // Current has not yet proved itself
	Starts  int              `json:"starts,omitempty"` // agent starts during the trial
	Refused map[Level]uint64 `json:"refused,omitempty"`
	Report  Report           `json:"report"`
}

func loadJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w: %w", path, ErrMalformed, err)
	}
	return nil
}

// saveJSON replaces path atomically and durably: a power cut leaves the
// old file or the new one, never a torn one.
func saveJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", " ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(path, b, 0o600)
}
