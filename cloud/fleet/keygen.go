package fleet

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/edgepipe/sensorpipe/buffer/cmdline"
	"github.com/edgepipe/sensorpipe/buffer/sign"
)

// keygen writes a new fleet key pair. The same files come from openssl:
//
//	openssl genpkey -algorithm ed25519 -out fleet.key
//	openssl pkey -in fleet.key -pubout -out fleet-keys.pem
func keygen(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("fleet keygen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	forRelease := fs.Bool("release", false, "a release key (signs manifests: RELEASE_KEY_FILE, devices' update.keys_file) rather than a fleet key")
	pos, err := parse(fs, args, 2, "PRIVATE_FILE PUBLIC_FILE")
	if err != nil {
		return err
	}
	for _, p := range pos {
		if _, err := os.Stat(p); err == nil {
			return cmdline.Usagef("%s exists; not overwriting a key", p)
		}
	}
	s, err := sign.Generate()
	if err != nil {
		return err
	}
	if err := writeNew(pos[0], s.PrivatePEM(), 0o600); err != nil {
		return err
	}
	if err := writeNew(pos[1], s.PublicPEM(), 0o644); err != nil {
		return err
	}
	if *forRelease {
		fmt.Fprintf(stdout, "wrote the private key to %s (keep it where releases are built: RELEASE_KEY_FILE) and the public key to %s (copy it to each device's update.keys_file)\n", pos[0], pos[1])
		return nil
	}
	fmt.Fprintf(stdout, "wrote the private key to %s (keep it with the operator: FLEET_KEY_FILE) and the public key to %s (copy it to each device's fleet.keys_file)\n", pos[0], pos[1])
	return nil
}

func writeNew(path string, b []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if errors.Is(err, fs.ErrExist) {
		return cmdline.Usagef("%s exists; not overwriting a key", path)
	}
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
