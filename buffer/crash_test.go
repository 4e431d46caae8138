package buffer_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/buffer"
	"github.com/edgepipe/sensorpipe/buffer/reading"
)

const (
	crashChildEnv = "BUFFER_CRASH_CHILD"
	crashPathEnv  = "BUFFER_CRASH_PATH"
	// crashDownsampleBytes is small enough for a pass every ~1,000 readings.
	crashDownsampleBytes = 256 << 10
)

// crashChild appends ("append") or deletes ("delete") as fast as it can and
// prints, after each call returned, "a SEQ..." or "d SEQ..." on one line.
// "append-downsample" appends readings stamped now to a buffer of
// crashDownsampleBytes, which folds them into aggregates every few
// hundred milliseconds. It runs until killed.
func crashChild(mode, path string) int {
	opts := buffer.Options{}
	if mode == "append-downsample" {
		opts.MaxBytes = crashDownsampleBytes
	}
	b, err := buffer.Open(path, opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child open:", err)
		return 3
	}
	var mu sync.Mutex
	report := func(tag string, seqs []uint64) {
		var sb strings.Builder
		sb.WriteString(tag)
		for _, s := range seqs {
			sb.WriteByte(' ')
			sb.WriteString(strconv.FormatUint(s, 10))
		}
		sb.WriteByte('\n')
		mu.Lock()
		defer mu.Unlock()
		if _, err := os.Stdout.WriteString(sb.String()); err != nil {
			os.Exit(4)
		}
	}
	ctx := context.Background()
	fail := func(err error) { fmt.Fprintln(os.Stderr, "child:", err); os.Exit(5) }
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(w)))
			for i := 0; ; i++ {
				switch mode {
				case "append", "append-downsample":
					rs := make([]*reading.Reading, 1+rng.IntN(5))
					for j := range rs {
						rs[j] = newReading(i + j)
						if mode == "append-downsample" {
							rs[j].TS = time.Now().UTC() // later than every earlier run's
						}
					}
					if err := b.Append(ctx, rs...); err != nil {
						fail(err)
					}
					seqs := make([]uint64, len(rs))
					for j, r := range rs {
						seqs[j] = r.Seq
					}
					report("a", seqs)
				case "delete":
					// Each worker takes its own stripe of the oldest records
					// and deletes them in a random order, a few at a time.
					recs, err := b.Peek(0, 400)
					if err != nil {
						fail(err)
					}
					var mine []uint64
					for _, r := range recs {
						if r.Seq%4 == uint64(w) {
							mine = append(mine, r.Seq)
						}
					}
					if len(mine) == 0 {
						time.Sleep(time.Millisecond)
						continue
					}
					rng.Shuffle(len(mine), func(i, j int) { mine[i], mine[j] = mine[j], mine[i] })
					for len(mine) > 0 {
						n := min(len(mine), 1+rng.IntN(20))
						if err := b.Delete(ctx, mine[:n]...); err != nil {
							fail(err)
						}
						report("d", mine[:n])
						mine = mine[n:]
					}
				}
			}
		}()
	}
	wg.Wait()
	return 0
}

// childCommand re-executes this test binary as a crash child. Without
// binfmt_misc, a 32-bit ARM test running under qemu-user cannot exec an ARM
// binary directly, so the child is started through qemu as well.
func childCommand(t testing.TB, mode, path string) *exec.Cmd {
	t.Helper()
	args := []string{os.Args[0], "-test.run=^$"}
	if runtime.GOARCH == "arm" {
		if q, err := exec.LookPath("qemu-arm-static"); err == nil {
			args = append([]string{q}, args...)
		} else if q, err := exec.LookPath("qemu-arm"); err == nil {
			args = append([]string{q}, args...)
		}
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), crashChildEnv+"="+mode, crashPathEnv+"="+path)
	cmd.Stderr = os.Stderr
	return cmd
}

// runAndKill starts a child, lets it work for a random moment, SIGKILLs it
// and returns the seqs it reported.
func runAndKill(t *testing.T, rng *rand.Rand, mode, path string, minWork, maxWork time.Duration) []uint64 {
	t.Helper()
	cmd := childCommand(t, mode, path)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		if errors.Is(err, syscall.ENOEXEC) {
			t.Fatalf("cannot exec the test binary as a child (%v); install qemu-user-static", err)
		}
		t.Fatal(err)
	}
	var reported []uint64
	var parseErr error
	lines := make(chan struct{})
	first := make(chan struct{}, 1)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			select {
			case first <- struct{}{}:
			default:
			}
			f := strings.Fields(sc.Text())
			if len(f) < 2 || f[0] != mode[:1] {
				parseErr = fmt.Errorf("bad child line %q", sc.Text())
				return
			}
			for _, s := range f[1:] {
				v, err := strconv.ParseUint(s, 10, 64)
				if err != nil {
					parseErr = err
					return
				}
				reported = append(reported, v)
			}
		}
	}()
	// Kill only once the child is working, so every run tests a crash
	// mid-stream rather than during start-up.
	select {
	case <-first:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("%s child reported nothing in 30s", mode)
	}
	time.Sleep(minWork + time.Duration(rng.Int64N(int64(maxWork-minWork))))
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-lines
	err = cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child did not die by SIGKILL: %v", err)
	}
	if parseErr != nil {
		t.Fatal(parseErr)
	}
	return reported
}

// inspect opens the file as the CLI would, runs the full verify, and
// returns every stored seq after checking they strictly increase.
func inspect(t *testing.T, path string) []uint64 {
	t.Helper()
	if aside, _ := filepath.Glob(path + ".corrupt-*"); len(aside) > 0 {
		t.Fatalf("the buffer was found corrupt after a crash: %v", aside)
	}
	b, err := buffer.OpenReadOnly(path, time.Second)
	if err != nil {
		t.Fatalf("OpenReadOnly after crash: %v", err)
	}
	defer b.Close()
	rep, err := b.Verify(context.Background())
	if err != nil || !rep.OK() {
		t.Fatalf("verify after crash: %+v, %v", rep, err)
	}
	var stored []uint64
	err = b.Each(context.Background(), 0, ^uint64(0), func(seq uint64, payload []byte) error {
		if n := len(stored); n > 0 && seq <= stored[n-1] {
			return fmt.Errorf("seq %d after %d", seq, stored[n-1])
		}
		stored = append(stored, seq)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if uint64(len(stored)) != rep.Count {
		t.Fatalf("Each saw %d records, verify %d", len(stored), rep.Count)
	}
	return stored
}

func crashRuns(t *testing.T) int {
	if testing.Short() {
		return 5
	}
	if runtime.GOARCH == "arm" {
		// Emulated by qemu-user (0.3-0.6 s a run): fewer, still asserted;
		// the host run does the full 50.
		return 20
	}
	return 50
}

func TestCrashWhileAppending(t *testing.T) {
	path := filepath.Join(t.TempDir(), "buffer.db")
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	var lastMax uint64
	total := 0
	for i := 0; i < crashRuns(t); i++ {
		reported := runAndKill(t, rng, "append", path, time.Millisecond, 60*time.Millisecond)
		if len(reported) == 0 {
			t.Fatalf("run %d: child reported no append", i)
		}
		total += len(reported)
		stored := inspect(t, path)
		for _, s := range reported {
			if _, ok := slices.BinarySearch(stored, s); !ok {
				t.Fatalf("run %d: seq %d was acknowledged by Append but is missing after SIGKILL", i, s)
			}
			if s <= lastMax {
				t.Fatalf("run %d: seq %d reused (a previous run reached %d)", i, s, lastMax)
			}
		}
		lastMax = stored[len(stored)-1]
		// Keep the file small (verify decodes every record) but not empty,
		// so older data is carried through the following crashes too.
		if len(stored) > 500 {
			b, err := buffer.Open(path, buffer.Options{})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := b.Purge(context.Background(), stored[len(stored)-500]); err != nil {
				t.Fatal(err)
			}
			if err := b.Close(); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Logf("%d runs, %d acknowledged appends, all present", crashRuns(t), total)
}

func TestCrashWhileDeleting(t *testing.T) {
	path := filepath.Join(t.TempDir(), "buffer.db")
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 2))
	refill := func() {
		b, err := buffer.Open(path, buffer.Options{})
		if err != nil {
			t.Fatal(err)
		}
		appendN(t, b, 0, 1500)
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
	}
	refill()
	before := inspect(t, path)
	deleted := map[uint64]bool{}
	for i := 0; i < crashRuns(t); i++ {
		reported := runAndKill(t, rng, "delete", path, time.Millisecond, 40*time.Millisecond)
		for _, s := range reported {
			deleted[s] = true
		}
		after := inspect(t, path)
		for _, s := range after {
			if deleted[s] {
				t.Fatalf("run %d: seq %d was acknowledged as deleted but is still stored", i, s)
			}
			if _, ok := slices.BinarySearch(before, s); !ok {
				t.Fatalf("run %d: seq %d appeared from nowhere", i, s)
			}
		}
		if len(after) < 300 {
			refill()
			after = inspect(t, path)
		}
		before = after
	}
	t.Logf("%d runs, %d acknowledged deletes, none resurrected", crashRuns(t), len(deleted))
}

// TestCrashWhileDownsampling kills a child that appends to a small buffer
// in downsample mode, so passes (bbolt transactions that delete readings
// and write aggregates) run all the time and are cut at random points.
// After each kill the file verifies (counters match the content), and
// every append the child saw acknowledged is still there or inside the
// covers of an aggregate: a crash mid-pass loses nothing, and the readings
// accounted for never exceed what was appended.
func TestCrashWhileDownsampling(t *testing.T) {
	path := filepath.Join(t.TempDir(), "buffer.db")
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 3))
	var acked []uint64
	var folded uint64
	for i := 0; i < crashRuns(t); i++ {
		acked = append(acked, runAndKill(t, rng, "append-downsample", path, 20*time.Millisecond, 150*time.Millisecond)...)
		stored := inspect(t, path)
		b, err := buffer.OpenReadOnly(path, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		st, err := b.Stats()
		if err != nil {
			t.Fatal(err)
		}
		var covers [][2]uint64
		var accounted uint64
		err = b.Each(context.Background(), 0, ^uint64(0), func(seq uint64, p []byte) error {
			r, err := reading.Decode(p)
			if err != nil {
				return fmt.Errorf("seq %d: %w", seq, err)
			}
			if r.Agg != nil {
				covers = append(covers, r.Agg.Covers)
				accounted += r.Agg.N
			} else {
				accounted++
			}
			return nil
		})
		_ = b.Close()
		if err != nil {
			t.Fatal(err)
		}
		if st.DroppedBytes != 0 || st.DroppedAge != 0 {
			t.Fatalf("run %d: %d readings dropped; the test needs none to check every acknowledged seq", i, st.DroppedBytes+st.DroppedAge)
		}
		for _, s := range acked {
			if _, ok := slices.BinarySearch(stored, s); ok {
				continue
			}
			if !slices.ContainsFunc(covers, func(c [2]uint64) bool { return c[0] <= s && s <= c[1] }) {
				t.Fatalf("run %d: seq %d was acknowledged by Append but is neither stored nor covered by an aggregate", i, s)
			}
		}
		if accounted < uint64(len(acked)) || accounted > st.LastSeq-st.SeqFloor {
			t.Fatalf("run %d: %d readings accounted for, %d acknowledged, %d seqs handed out", i, accounted, len(acked), st.LastSeq-st.SeqFloor)
		}
		folded = st.Folded
	}
	if folded == 0 {
		t.Fatal("no reading was ever folded: the runs never filled the buffer")
	}
	t.Logf("%d runs, %d acknowledged appends, %d folded, all accounted for", crashRuns(t), len(acked), folded)
}
