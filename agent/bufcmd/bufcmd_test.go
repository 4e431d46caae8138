package bufcmd_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/agent/bufhttp"
	"github.com/edgepipe/sensorpipe/agent/clock"
	"github.com/edgepipe/sensorpipe/buffer"
	"github.com/edgepipe/sensorpipe/buffer/reading"
	"github.com/edgepipe/sensorpipe/scripts/testkit"
)

// bin is the real edge-agent binary, built once by TestMain.
var bin string

func TestMain(m *testing.M) {
	testkit.Main(m, &bin, "github.com/edgepipe/sensorpipe/agent/cmd/edge-agent")
}

type result struct {
	stdout, stderr string
	code           int
	took           time.Duration
}

func run(t *testing.T, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"buffer"}, args...)...)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	r := result{out.String(), errb.String(), 0, time.Since(start)}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("run %v: %v", args, err)
	}
	return r
}

func (r result) want(t *testing.T, code int, stdoutHas, stderrHas []string) {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", r.code, code, r.stdout, r.stderr)
	}
	for _, s := range stdoutHas {
		if !strings.Contains(r.stdout, s) {
			t.Errorf("stdout lacks %q:\n%s", s, r.stdout)
		}
	}
	for _, s := range stderrHas {
		if !strings.Contains(r.stderr, s) {
			t.Errorf("stderr lacks %q:\n%s", s, r.stderr)
		}
	}
}

var t0 = time.Date(2026, 11, 25, 10, 15, 2, 125e6, time.UTC)

// fill creates a buffer with n readings, seqs f+1..f+n, closes it and
// returns its path and f, the buffer's seq floor.
func fill(t *testing.T, n int) (string, uint64) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "buffer.db")
	b, err := buffer.Open(path, buffer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	f := floorOf(t, b)
	appendReadings(t, b, n)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	return path, f
}

// floorOf is the seq a fresh buffer started above.
func floorOf(t *testing.T, b *buffer.Buffer) uint64 {
	t.Helper()
	st, err := b.Stats()
	if err != nil {
		t.Fatal(err)
	}
	return st.SeqFloor
}

// span formats the stats line's "N (seq A..B)" for seqs f+from..f+to.
func span(f uint64, from, to uint64) string {
	return fmt.Sprintf("%d (seq %d..%d)", to-from+1, f+from, f+to)
}

func u(f uint64) string { return fmt.Sprint(f) }

func appendReadings(t *testing.T, b *buffer.Buffer, n int) {
	t.Helper()
	rs := make([]*reading.Reading, n)
	for i := range rs {
		rs[i] = &reading.Reading{DeviceID: "pi-test", Sensor: fmt.Sprintf("sim-%d", i%2), Kind: "sim",
			TS: t0.Add(time.Duration(i) * time.Second), TimeSynced: true,
			Values: map[string]float64{reading.Temperature: 21.5, reading.Humidity: float64(i)}}
	}
	if err := b.Append(context.Background(), rs...); err != nil {
		t.Fatal(err)
	}
}

// jsonLines decodes wire-format readings, one per line, and returns their seqs.
func jsonLines(t *testing.T, s string) []uint64 {
	t.Helper()
	var seqs []uint64
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		r, err := reading.Decode(sc.Bytes())
		if err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		seqs = append(seqs, r.Seq)
	}
	return seqs
}

func seqRange(from, to uint64) []uint64 {
	var s []uint64
	for i := from; i <= to; i++ {
		s = append(s, i)
	}
	return s
}

func equal(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestStoppedAgent(t *testing.T) {
	db, f := fill(t, 50)

	r := run(t, "stats", "--db", db)
	r.want(t, 0, []string{db, "agent not running", span(f, 1, 50), "2026-11-25T10:15:02.125Z", "dropped", "0 by max_bytes"}, nil)

	r = run(t, "stats", "--db", db, "--json")
	r.want(t, 0, nil, nil)
	var st buffer.Stats
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || st.Count != 50 || st.OldestSeq != f+1 || st.NewestSeq != f+50 || st.FileBytes == 0 || st.LiveBytes == 0 {
		t.Fatalf("stats --json = %s (%v)", r.stdout, err)
	}

	r = run(t, "list", "--db", db, "-n", "3")
	r.want(t, 0, []string{"SEQ", "SENSOR", "sim-0", "humidity_pct=2 temperature_c=21.5"}, nil)
	if lines := strings.Split(strings.TrimSpace(r.stdout), "\n"); len(lines) != 4 || !strings.HasPrefix(lines[1], u(f+1)+" ") || !strings.HasPrefix(lines[3], u(f+3)+" ") {
		t.Fatalf("list -n 3:\n%s", r.stdout)
	}
	r = run(t, "--db", db, "list", "-n", "2", "--newest", "--json") // flags before the command too
	r.want(t, 0, nil, nil)
	if got := jsonLines(t, r.stdout); !equal(got, []uint64{f + 49, f + 50}) {
		t.Fatalf("list --newest -n 2 --json = %v", got)
	}

	r = run(t, "export", "--db", db)
	r.want(t, 0, nil, nil)
	if got := jsonLines(t, r.stdout); !equal(got, seqRange(f+1, f+50)) {
		t.Fatalf("export = %v", got)
	}
	r = run(t, "export", "--db", db, "--from", u(f+10), "--to", u(f+12))
	r.want(t, 0, nil, nil)
	if got := jsonLines(t, r.stdout); !equal(got, seqRange(f+10, f+12)) {
		t.Fatalf("export --from 10 --to 12 = %v", got)
	}

	r = run(t, "verify", "--db", db)
	r.want(t, 0, []string{"ok: 50 readings", "bbolt check passed"}, nil)
	r = run(t, "verify", "--db", db, "--json")
	r.want(t, 0, []string{`"ok":true`, `"count":50`}, nil)
}

func TestPurge(t *testing.T) {
	db, f := fill(t, 20)
	r := run(t, "purge", "--db", db, "--upto", u(f+5))
	r.want(t, 2, nil, []string{"would delete 5 of 20 readings", "--yes"})
	run(t, "stats", "--db", db).want(t, 0, []string{span(f, 1, 20)}, nil)

	run(t, "purge", "--db", db, "--upto", u(f+5), "--yes").want(t, 0, []string{"deleted 5 readings"}, nil)
	run(t, "stats", "--db", db).want(t, 0, []string{span(f, 6, 20)}, nil)
	run(t, "purge", "--db", db, "--all", "--yes").want(t, 0, []string{"deleted 15 readings", "seqs continue after " + u(f+20)}, nil)
	run(t, "stats", "--db", db).want(t, 0, []string{"0 (empty)", "last seq    " + u(f+20)}, nil)

	// The sequence survives the purge.
	b, err := buffer.Open(db, buffer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	appendReadings(t, b, 1)
	b.Close()
	run(t, "stats", "--db", db).want(t, 0, []string{span(f, 21, 21)}, nil)
	run(t, "verify", "--db", db).want(t, 0, []string{"ok: 1 readings"}, nil)
}

func TestErrorsAndExitCodes(t *testing.T) {
	db, _ := fill(t, 3)
	missing := filepath.Join(t.TempDir(), "nothing-here.db")
	tests := []struct {
		name      string
		args      []string
		code      int
		stderrHas []string
	}{
		{"no command", nil, 2, []string{"usage: edge-agent buffer"}},
		{"unknown command", []string{"frobnicate", "--db", db}, 2, []string{`unknown command "frobnicate"`}},
		{"unknown flag", []string{"stats", "--db", db, "--bogus"}, 2, []string{"bogus"}},
		{"bad -n", []string{"list", "--db", db, "-n", "abc"}, 2, []string{"-n"}},
		{"zero -n", []string{"list", "--db", db, "-n", "0"}, 2, []string{"-n must be"}},
		{"flag of another command", []string{"stats", "--db", db, "--newest"}, 2, []string{"--newest does not apply to stats"}},
		{"purge without range", []string{"purge", "--db", db, "--yes"}, 2, []string{"exactly one of --all or --upto"}},
		{"purge both", []string{"purge", "--db", db, "--all", "--upto", "3", "--yes"}, 2, []string{"exactly one"}},
		{"export backwards", []string{"export", "--db", db, "--from", "5", "--to", "2"}, 2, []string{"after --to"}},
		{"extra argument", []string{"stats", "--db", db, "extra"}, 2, []string{`unexpected argument "extra"`}},
		{"missing file stats", []string{"stats", "--db", missing}, 1, []string{missing}},
		{"missing file verify", []string{"verify", "--db", missing}, 1, []string{missing}},
		{"missing file purge", []string{"purge", "--db", missing, "--all", "--yes"}, 1, []string{missing}},
		{"missing config", []string{"stats", "--config", filepath.Join(t.TempDir(), "no.yaml")}, 2, []string{"no.yaml"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			run(t, tt.args...).want(t, tt.code, nil, tt.stderrHas)
		})
	}
	if _, err := os.Stat(missing); err == nil {
		t.Fatal("a command created the missing buffer file")
	}
}

func TestVerifyFindsDamage(t *testing.T) {
	db, _ := fill(t, 3000)
	f, err := os.OpenFile(db, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := f.Stat()
	// Garbage over a page in the middle of the tree.
	if _, err := f.WriteAt(bytes.Repeat([]byte{0xA5}, 4096), fi.Size()/4096/2*4096); err != nil {
		t.Fatal(err)
	}
	f.Close()
	r := run(t, "verify", "--db", db)
	if r.code != 1 || !strings.Contains(r.stdout+r.stderr, "corrupt") {
		t.Fatalf("verify of a damaged file: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	if aside, _ := filepath.Glob(db + ".corrupt-*"); len(aside) > 0 {
		t.Fatal("the read-only command moved the file")
	}
}

// TestVerifyFindsFlippedByte: one changed digit in one stored reading is
// found by its checksum and named by seq.
func TestVerifyFindsFlippedByte(t *testing.T) {
	db, f := fill(t, 20)
	b, err := os.ReadFile(db)
	if err != nil {
		t.Fatal(err)
	}
	at := bytes.Index(b, fmt.Appendf(nil, `"seq":%d,`, f+7))
	v := bytes.Index(b[at:], []byte(`"temperature_c":2`))
	if at < 0 || v < 0 {
		t.Fatalf("seq %d not found in the file", f+7)
	}
	b[at+v+len(`"temperature_c":`)] = '3' // 21.5 becomes 31.5: still a valid reading
	if err := os.WriteFile(db, b, 0o600); err != nil {
		t.Fatal(err)
	}
	r := run(t, "verify", "--db", db)
	r.want(t, 1, []string{fmt.Sprintf("seq %d: ", f+7), "checksum mismatch"}, nil)
	run(t, "verify", "--db", db, "--json").want(t, 1, []string{`"ok":false`, `"damaged":1`}, nil)
}

// TestRunningAgent holds the file read-write in this process, as the agent
// does, and serves Handler on a real socket.
func TestRunningAgent(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "buffer.db")
	b, err := buffer.Open(db, buffer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	f := floorOf(t, b)
	appendReadings(t, b, 30)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	// The publisher has sent 12 readings that wait for a confirmation.
	mux.Handle("/buffer/", bufhttp.Handler(b, func() bufhttp.Delivery {
		return bufhttp.Delivery{Mode: "kafka", SentUnconfirmed: 12, OldestUnconfirmed: time.Now().Add(-time.Minute)}
	}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	addr := ln.Addr().String()

	// The address comes from the config's status_listen, or --status.
	cfg := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("device_id: pi-test\nbuffer:\n  path: %s\nstatus_listen: %s\n", db, addr)), 0o600); err != nil {
		t.Fatal(err)
	}

	r := run(t, "stats", "--config", cfg)
	r.want(t, 0, []string{"via the running agent", span(f, 1, 30), "max_bytes 256 MiB",
		"delivery           kafka", "waiting            18", "sent, unconfirmed  12 (oldest first sent 1 minute ago)",
		"last confirmation  none since the agent started"}, nil)
	if r.took > 10*time.Second {
		t.Fatalf("stats took %v", r.took)
	}
	r = run(t, "stats", "--db", db, "--status", addr, "--json")
	r.want(t, 0, []string{`"count":30`, `"delivery":{"mode":"kafka","waiting":18,"sent_unconfirmed":12,"confirmed_deleting":0,"oldest_unconfirmed":`}, nil)
	r = run(t, "list", "--config", cfg, "-n", "2", "--newest", "--json")
	r.want(t, 0, nil, nil)
	if got := jsonLines(t, r.stdout); !equal(got, []uint64{f + 29, f + 30}) {
		t.Fatalf("list via agent = %v", got)
	}
	run(t, "list", "--config", cfg, "-n", "1").want(t, 0, []string{"SEQ", "sim-0"}, nil)
	r = run(t, "export", "--config", cfg, "--from", u(f+25))
	r.want(t, 0, nil, nil)
	if got := jsonLines(t, r.stdout); !equal(got, seqRange(f+25, f+30)) {
		t.Fatalf("export via agent = %v", got)
	}

	run(t, "verify", "--config", cfg).want(t, 1, nil, []string{"agent holds " + db, "systemctl stop edge-agent"})
	run(t, "purge", "--config", cfg, "--all", "--yes").want(t, 1, nil, []string{"refusing to purge", db})
	if st, _ := b.Stats(); st.Count != 30 {
		t.Fatalf("purge while running deleted readings: %+v", st)
	}

	// Locked and no endpoint: a clear message, quickly, never a hang.
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadAddr := dead.Addr().String()
	dead.Close()
	r = run(t, "stats", "--db", db, "--status", deadAddr)
	r.want(t, 1, nil, []string{"agent holds " + db, deadAddr, "did not answer"})
	if r.took > 10*time.Second {
		t.Fatalf("stats with a dead endpoint took %v", r.took)
	}
}

// TestHeldReadings: readings taken before the clock synced, in this boot,
// show as held for the clock: on the stopped file (what the agent's next
// start would hold, by the config's clock.hold_unsynced) and through the
// running agent's endpoint (what its buffer holds now).
func TestHeldReadings(t *testing.T) {
	id, err := clock.BootID()
	if err != nil {
		t.Skipf("no boot id on this kernel (%v): readings cannot be held", err)
	}
	dir := t.TempDir()
	db := filepath.Join(dir, "buffer.db")
	hold := func(synced bool, b reading.BootStamp) time.Duration {
		if synced || b.ID != id {
			return 0
		}
		return 5 * time.Minute
	}
	b, err := buffer.Open(db, buffer.Options{Hold: hold})
	if err != nil {
		t.Fatal(err)
	}
	appendReadings(t, b, 5)
	since := clock.SinceBoot() - 30*time.Second // taken 30 s ago
	for i := range 3 {
		r := &reading.Reading{DeviceID: "pi-test", Sensor: "sim-0", Kind: "sim", TS: t0.Add(time.Hour),
			Values: map[string]float64{reading.Temperature: 21.5}, Boot: reading.BootStamp{ID: id, Since: since + time.Duration(i)*time.Second}}
		if err := b.Append(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}

	// Running: the endpoint reports the buffer's own hold.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/buffer/", bufhttp.Handler(b, nil))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	r := run(t, "stats", "--db", db, "--status", ln.Addr().String())
	r.want(t, 0, []string{"via the running agent", "held for the clock  3 taken before NTP synced, held back so", "clock.hold_unsynced"}, nil)
	r = run(t, "stats", "--db", db, "--status", ln.Addr().String(), "--json")
	r.want(t, 0, []string{`"held":3,"held_until":"`}, nil)
	srv.Close()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	// Stopped: the default hold (10m) holds them at the next start; a
	// config without a hold does not.
	r = run(t, "stats", "--db", db)
	r.want(t, 0, []string{"agent not running", "held for the clock  3 taken before NTP synced, held back when the agent starts"}, nil)
	var st buffer.Stats
	r = run(t, "stats", "--db", db, "--json")
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || st.Held != 3 ||
		st.HeldUntil.Before(time.Now().Add(9*time.Minute)) || st.HeldUntil.After(time.Now().Add(10*time.Minute)) {
		t.Fatalf("stats --json = %s (%v); want 3 held for about 9m30s", r.stdout, err)
	}
	cfg := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("buffer: {path: %s}\nclock: {hold_unsynced: 0s}\nstatus_listen: \"\"\n", db)), 0o600); err != nil {
		t.Fatal(err)
	}
	r = run(t, "stats", "--config", cfg)
	r.want(t, 0, []string{"agent not running"}, nil)
	if strings.Contains(r.stdout, "held") {
		t.Errorf("held readings without a hold:\n%s", r.stdout)
	}
}

// TestDownsampledBuffer: a buffer that folded readings into aggregates
// shows them as such (stats: folded and when_full; list: the aggregate's
// count and range; export: the wire format with agg) and verifies clean.
func TestDownsampledBuffer(t *testing.T) {
	path := filepath.Join(t.TempDir(), "buffer.db")
	b, err := buffer.Open(path, buffer.Options{MaxBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 40; i++ {
		appendReadings(t, b, 200) // ~200 bytes each: 8,000 readings overflow 1 MiB
	}
	if err := b.Close(); err != nil { // finishes the pass the last append asked for
		t.Fatal(err)
	}
	if b, err = buffer.Open(path, buffer.Options{MaxBytes: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	st, err := b.Stats()
	if err != nil || st.Folded == 0 {
		t.Fatalf("stats %+v %v: nothing folded", st, err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	r := run(t, "stats", "--db", path)
	r.want(t, 0, []string{"folded", fmt.Sprintf("%d readings into aggregates", st.Folded)}, nil)
	r = run(t, "list", "--db", path, "-n", "10000")
	r.want(t, 0, []string{"aggregate of ", "(level 1, to 2026-11-25T", "mean humidity_pct="}, nil)
	r = run(t, "export", "--db", path)
	r.want(t, 0, []string{`"agg":{"n":`}, nil)
	if got := jsonLines(t, r.stdout); uint64(len(got)) != st.Count {
		t.Fatalf("export has %d records, stats %d", len(got), st.Count)
	}
	r = run(t, "verify", "--db", path)
	r.want(t, 0, []string{"ok: ", "bbolt check passed"}, nil)
}
