package bufcmd

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/edgepipe/sensorpipe/agent/bufhttp"
	"github.com/edgepipe/sensorpipe/agent/clock"
	"github.com/edgepipe/sensorpipe/buffer"
	"github.com/edgepipe/sensorpipe/buffer/cmdline"
	"github.com/edgepipe/sensorpipe/buffer/reading"
)

func runStats(ctx context.Context, o *opts, stdout io.Writer) error {
	src, err := open(ctx, o, true)
	if err != nil {
		return err
	}
	defer src.close()
	var st bufhttp.Stats
	if src.buf != nil {
		st.Stats, err = fileStats(src.buf, o.hold)
	} else {
		st, err = src.remote.Stats(ctx)
	}
	if err != nil {
		return err
	}
	if o.json {
		return json.NewEncoder(stdout).Encode(st)
	}
	via := "file, agent not running"
	if src.remote != nil {
		via = "via the running agent at " + src.remote.Base()
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "buffer\t%s (%s)\n", o.db, via)
	if st.Count == 0 {
		fmt.Fprintf(tw, "readings\t0 (empty)\n")
	} else {
		fmt.Fprintf(tw, "readings\t%d (seq %d..%d)\n", st.Count, st.OldestSeq, st.NewestSeq)
		fmt.Fprintf(tw, "oldest\t%s\n", fmtTime(st.OldestTS))
		fmt.Fprintf(tw, "newest\t%s\n", fmtTime(st.NewestTS))
	}
	if d := st.Delivery; d != nil {
		fmt.Fprintf(tw, "delivery\t%s\n", d.Mode)
		fmt.Fprintf(tw, "waiting\t%d (not sent yet, or to be sent again)\n", d.Waiting)
		if d.Mode == "kafka" {
			fmt.Fprintf(tw, "sent, unconfirmed\t%d", d.SentUnconfirmed)
			if !d.OldestUnconfirmed.IsZero() {
				fmt.Fprintf(tw, " (oldest first sent %s)", humanize.Time(d.OldestUnconfirmed))
			}
			fmt.Fprintln(tw)
			last := "none since the agent started"
			if !d.LastConfirm.IsZero() {
				last = fmtTime(d.LastConfirm)
			}
			fmt.Fprintf(tw, "last confirmation\t%s\n", last)
		}
		if d.ConfirmedDeleting > 0 {
			fmt.Fprintf(tw, "delivered, deleting\t%d\n", d.ConfirmedDeleting)
		}
	} else if st.Count > 0 {
		fmt.Fprintf(tw, "delivery\tagent not running: it sends every buffered reading (again) when it starts\n")
	}
	fmt.Fprintf(tw, "last seq\t%d\n", st.LastSeq)
	fmt.Fprintf(tw, "live bytes\t%s\n", humanize.IBytes(uint64(st.LiveBytes)))
	fmt.Fprintf(tw, "file size\t%s (%s free for reuse), log %s not yet checkpointed\n",
		humanize.IBytes(uint64(st.FileBytes)), humanize.IBytes(uint64(st.FreeBytes)), humanize.IBytes(uint64(st.LogBytes)))
	if st.MaxBytes > 0 {
		fmt.Fprintf(tw, "bounds\tmax_bytes %s (when full: %s), max_age %s\n", humanize.IBytes(uint64(st.MaxBytes)), st.WhenFull, time.Duration(st.MaxAge))
	}
	if st.Held > 0 {
		what := "held back"
		if src.remote == nil {
			what = "held back when the agent starts"
		}
		fmt.Fprintf(tw, "held for the clock\t%d taken before NTP synced, %s so their time can be corrected; "+
			"published when the clock syncs, or from %s as they are (clock.hold_unsynced)\n", st.Held, what, fmtTime(st.HeldUntil))
	}
	fmt.Fprintf(tw, "dropped\t%d by max_bytes, %d by max_age\n", st.DroppedBytes, st.DroppedAge)
	if st.Folded > 0 {
		fmt.Fprintf(tw, "folded\t%d readings into aggregates (kept at a coarser resolution)\n", st.Folded)
	}
	if st.Damaged > 0 {
		fmt.Fprintf(tw, "damaged\t%d records failed their checksum and were moved aside unpublished\n", st.Damaged)
	}
	return tw.Flush()
}

// fileStats is the stopped agent's buffer's Stats, with the readings its
// next start would hold for the clock (taken unsynced in this boot less
// than hold ago; the read-only buffer has no hold of its own).
func fileStats(b *buffer.Buffer, hold time.Duration) (buffer.Stats, error) {
	st, err := b.Stats()
	if err != nil || hold <= 0 {
		return st, err
	}
	clk := clock.New(clock.Always(false), clock.WithHold(hold))
	n, rest, err := b.CountHeld(clk.Held)
	if err != nil {
		return st, err
	}
	if n > 0 {
		st.Held, st.HeldUntil = n, time.Now().Add(rest)
	}
	return st, nil
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return fmt.Sprintf("%s (%s)", t.UTC().Format("2006-01-02T15:04:05.000Z"), humanize.Time(t))
}

func runList(ctx context.Context, o *opts, stdout io.Writer) error {
	src, err := open(ctx, o, true)
	if err != nil {
		return err
	}
	defer src.close()
	var lines [][]byte
	if src.buf != nil {
		recs, err := bufhttp.ListRecords(src.buf, o.n, o.newest)
		if err != nil {
			return err
		}
		for _, r := range recs {
			lines = append(lines, r.Payload)
		}
	} else {
		q := url.Values{"n": {strconv.Itoa(o.n)}}
		if o.newest {
			q.Set("newest", "1")
		}
		err := src.remote.Lines(ctx, "/list", q, func(line []byte) error {
			lines = append(lines, bytes.Clone(line))
			return nil
		})
		if err != nil {
			return err
		}
	}
	if o.json {
		return writeLines(stdout, lines)
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tSENSOR\tKIND\tTS\tSYNCED\tVALUES")
	for _, l := range lines {
		r, err := reading.Decode(l)
		if err != nil {
			fmt.Fprintf(tw, "?\t\t\t\t\tundecodable: %v\n", err)
			continue
		}
		vals := fmtValues(r.Values)
		if a := r.Agg; a != nil { // a full buffer's aggregate: the values are means
			vals = fmt.Sprintf("aggregate of %d (level %d, to %s, seqs %d..%d) mean %s", a.N, a.Level,
				a.To.Format("2006-01-02T15:04:05.000Z"), a.Covers[0], a.Covers[1], vals)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%t\t%s\n", r.Seq, r.Sensor, r.Kind,
			r.TS.Format("2006-01-02T15:04:05.000Z"), r.TimeSynced, vals)
	}
	if len(lines) == 0 {
		fmt.Fprintln(tw, "(empty)")
	}
	return tw.Flush()
}

func fmtValues(v map[string]float64) string {
	keys := make([]string, 0, len(v))
	for k := range v {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + strconv.FormatFloat(v[k], 'f', -1, 64)
	}
	return strings.Join(parts, " ")
}

func writeLines(w io.Writer, lines [][]byte) error {
	bw := bufio.NewWriter(w)
	for _, l := range lines {
		bw.Write(l)
		bw.WriteByte('\n')
	}
	return bw.Flush()
}

// runExport prints JSON lines; it is the same with or without --json.
func runExport(ctx context.Context, o *opts, stdout io.Writer) error {
	src, err := open(ctx, o, true)
	if err != nil {
		return err
	}
	defer src.close()
	bw := bufio.NewWriterSize(stdout, 64<<10)
	write := func(line []byte) error {
		bw.Write(line)
		return bw.WriteByte('\n')
	}
	if src.buf != nil {
		err = src.buf.Each(ctx, o.from, o.to, func(_ uint64, p []byte) error { return write(p) })
	} else {
		q := url.Values{}
		if o.from > 0 {
			q.Set("from", strconv.FormatUint(o.from, 10))
		}
		if o.to != math.MaxUint64 {
			q.Set("to", strconv.FormatUint(o.to, 10))
		}
		err = src.remote.Lines(ctx, "/export", q, write)
	}
	if ferr := bw.Flush(); err == nil {
		err = ferr
	}
	if err != nil {
		return fmt.Errorf("export %s: %w (the output is incomplete)", o.db, err)
	}
	return nil
}

// errVerifyFailed is returned (exit 1) when verify found problems.
var errVerifyFailed = errors.New("verify found problems")

func runVerify(ctx context.Context, o *opts, stdout io.Writer) error {
	src, err := open(ctx, o, false)
	if errors.Is(err, errAgentHolds) {
		return agentHolds(o, "verify")
	}
	if err != nil {
		return err
	}
	defer src.close()
	start := time.Now()
	rep, err := src.buf.Verify(ctx)
	if err != nil {
		return err
	}
	if o.json {
		if err := json.NewEncoder(stdout).Encode(struct {
			OK bool `json:"ok"`
			buffer.VerifyReport
		}{rep.OK(), rep}); err != nil {
			return err
		}
	} else if rep.OK() {
		fmt.Fprintf(stdout, "%s: ok: %d readings, %s live, every checksum matches and every value decodes, bbolt check passed (%v)\n",
			o.db, rep.Count, humanize.IBytes(uint64(rep.LiveBytes)), time.Since(start).Round(time.Millisecond))
		if rep.DamagedAside > 0 {
			fmt.Fprintf(stdout, "%s: %d damaged records were moved aside earlier (bucket \"damaged\"; never published)\n", o.db, rep.DamagedAside)
		}
	} else {
		fmt.Fprintf(stdout, "%s: %d problems:\n", o.db, len(rep.Problems))
		for _, p := range rep.Problems {
			fmt.Fprintf(stdout, "  %s\n", p)
		}
	}
	if !rep.OK() {
		return fmt.Errorf("%s: %w (%d)", o.db, errVerifyFailed, len(rep.Problems))
	}
	return nil
}

func runPurge(ctx context.Context, o *opts, stdout io.Writer) error {
	src, err := open(ctx, o, false)
	if errors.Is(err, errAgentHolds) {
		return fmt.Errorf("refusing to purge: the agent holds %s (it is running); "+
			"stop it first (sudo systemctl stop edge-agent), purge, then start it again", o.db)
	}
	if err != nil {
		return err
	}
	upto := o.upto
	if o.all {
		upto = math.MaxUint64
	}
	st, err := src.buf.Stats()
	if err != nil {
		src.close()
		return err
	}
	n := 0
	err = src.buf.Each(ctx, 0, upto, func(uint64, []byte) error { n++; return nil })
	src.close()
	if err != nil {
		return err
	}
	what := fmt.Sprintf("%d of %d readings", n, st.Count)
	if !o.yes {
		return fmt.Errorf("%w: purge would delete %s from %s; add --yes to do it", cmdline.ErrUsage, what, o.db)
	}
	// Read-write now. A short lock timeout: if the agent started meanwhile, refuse.
	b, err := buffer.Open(o.db, buffer.Options{LockTimeout: LockTimeout, FullCheckLimit: -1})
	if errors.Is(err, buffer.ErrLocked) {
		return fmt.Errorf("refusing to purge: the agent started and holds %s", o.db)
	}
	if err != nil {
		return err
	}
	deleted, err := b.Purge(ctx, upto)
	if cerr := b.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("purge %s: deleted %d, then: %w", o.db, deleted, err)
	}
	if o.json {
		return json.NewEncoder(stdout).Encode(map[string]any{"deleted": deleted, "last_seq": st.LastSeq})
	}
	fmt.Fprintf(stdout, "%s: deleted %d readings; seqs continue after %d\n", o.db, deleted, st.LastSeq)
	return nil
}
