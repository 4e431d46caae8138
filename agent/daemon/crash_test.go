package daemon_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/buffer"
	"github.com/edgepipe/sensorpipe/buffer/reading"
	"github.com/edgepipe/sensorpipe/scripts/testkit"
	"github.com/edgepipe/sensorpipe/scripts/testkit/broker"
)

// TestCrashWhilePublishing SIGKILLs the real binary 20 times while it drains
// a 20,000-reading backlog and takes 4 sensors at 100 Hz each, with a
// forwarder confirming what it receives (delivery: kafka); after the last
// restart every reading ever stored reaches the broker.
func TestCrashWhilePublishing(t *testing.T) {
	const device = "pi-crash"
	cnt := broker.NewCounter()
	br := broker.New(t, broker.Options{})
	broker.Subscribe(t, cnt, broker.SubOptions{URL: br.URL()})
	broker.NewConfirmer(t, br.URL()).Auto(t, cnt, device, 100*time.Millisecond)
	dir := t.TempDir()
	db := filepath.Join(dir, "buffer.db")
	prefill(t, db, device, 20000)
	statusAddr := freePort(t)
	cfgPath := writeConfig(t, dir, fmt.Sprintf(`device_id: %s
buffer: {path: %s}
mqtt: {url: %q, delivery: kafka}
clock: {hold_unsynced: 0s}  # the host's clock may never report synced
status_listen: %s
log_format: json
sensors:
  - {name: sim-1, driver: sim, interval: 10ms}
  - {name: sim-2, driver: sim, interval: 10ms}
  - {name: sim-3, driver: sim, interval: 10ms}
  - {name: sim-4, driver: sim, interval: 10ms}
`, device, db, br.URL(), statusAddr))

	rng := rand.New(rand.NewPCG(1, 2))
	const perRun = 100
	for i := range 20 {
		cmd := exec.Command(agentBin, "run", "--config", cfgPath)
		var stderr testkit.LogBuffer
		cmd.Stderr = &stderr
		before := cnt.Unique(device)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Kill mid-work, not mid-start: wait until this run has delivered
		// something (a loaded machine can take seconds to start the binary),
		// then let it go on for a random while.
		testkit.WaitFor(t, fmt.Sprintf("run %d to deliver", i), 30*time.Second, func() bool {
			return cnt.Unique(device) >= before+perRun
		})
		time.Sleep(time.Duration(rng.IntN(300)) * time.Millisecond)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		err := cmd.Wait()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
			t.Fatalf("run %d ended before the kill: %v\n%s", i, err, stderr.String())
		}
	}
	delivered := cnt.Unique(device)
	t.Logf("after 20 kills: %d readings delivered", delivered)
	if delivered < 20*perRun {
		t.Errorf("only %d readings delivered across 20 runs; the backlog is not draining", delivered)
	}

	// Last run: let it drain everything, then stop it cleanly.
	cmd := exec.Command(agentBin, "run", "--config", cfgPath)
	var stderr testkit.LogBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	testkit.WaitFor(t, "the backlog to drain", 60*time.Second, func() bool {
		code, body := tryGet("http://" + statusAddr + "/buffer/stats")
		var st buffer.Stats
		return code == 200 && json.Unmarshal([]byte(body), &st) == nil && st.Count < 50 && st.LastSeq > st.SeqFloor+20000
	})
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("final run: %v\n%s", err, stderr.String())
	}
	checkNothingLost(t, cnt, device, db)
	if rep := cnt.Report(device); len(rep.Bad) > 0 {
		t.Fatalf("bad payloads: %v", rep.Bad[:min(3, len(rep.Bad))])
	}
}

func prefill(t testing.TB, path, device string, n int) {
	t.Helper()
	b, err := buffer.Open(path, buffer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for done := 0; done < n; done += 1000 {
		rs := make([]*reading.Reading, 1000)
		for i := range rs {
			rs[i] = &reading.Reading{DeviceID: device, Sensor: "backlog", Kind: "sim", TS: time.Now().UTC(), TimeSynced: true,
				Values: map[string]float64{reading.Temperature: 20}}
		}
		if err := b.Append(context.Background(), rs...); err != nil {
			t.Fatal(err)
		}
	}
}
