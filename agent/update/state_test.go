package update

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/buffer/heartbeat"
)

func TestStateRoundTrip(t *testing.T) {
	dir := t.TempDir()
	s, err := LoadState(dir)
	if err != nil || s.V != StateVersion || s.Trial != nil {
		t.Fatalf("missing state: %+v %v", s, err)
	}
	now := time.Unix(1_800_000_000, 0)
	err = Modify(dir, func(s *State) error {
		s.Trial = &Trial{Version: "1.1.0", From: "1.0.0", Deadline: Duration(2 * time.Minute), Starts: 1}
		s.report(heartbeat.Update{State: heartbeat.UpdateInstalled, Version: "1.1.0"}, now)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	s, err = LoadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	if s.Trial == nil || s.Trial.Deadline != Duration(2*time.Minute) || s.Report.At != now.Unix() {
		t.Fatalf("read back %+v", s)
	}
	b, _ := os.ReadFile(filepath.Join(dir, StateFile))
	var raw map[string]any
	if err := json.Unmarshal(b, &raw); err != nil || raw["v"] != float64(1) {
		t.Fatalf("state.json %s: %v", b, err)
	}
	s.rollback("crashed", now)
	if s.Trial != nil || !s.HasFailed("1.1.0") || s.Report.State != heartbeat.UpdateRolledBack || s.Report.Error != "crashed" {
		t.Fatalf("after rollback: %+v", s)
	}
}

func TestStateRefusesUnknownFormat(t *testing.T) {
	for _, content := range []string{`{"v":2,"committed":"9.0.0"}`, `{"v":0}`, `{"v":1`, `[]`} {
		dir := t.TempDir()
		path := filepath.Join(dir, StateFile)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		err := Modify(dir, func(*State) error { t.Fatal("fn called"); return nil })
		if err == nil {
			t.Fatalf("%s accepted", content)
		}
		if strings.HasPrefix(content, `{"v":2`) && !errors.Is(err, ErrStateVersion) {
			t.Errorf("%s: %v, want ErrStateVersion", content, err)
		}
		if b, _ := os.ReadFile(path); string(b) != content {
			t.Errorf("refused state.json was changed to %s", b)
		}
	}
}

func TestModifyIsExclusive(t *testing.T) {
	dir := t.TempDir()
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := Modify(dir, func(s *State) error { s.PID++; return nil }); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	s, err := LoadState(dir)
	if err != nil || s.PID != 20 {
		t.Fatalf("20 increments under the lock gave %d (%v)", s.PID, err)
	}
}
