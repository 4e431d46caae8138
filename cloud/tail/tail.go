// Package tail is `cloud-forwarder tail`: a Kafka consumer that prints the
// readings on the topic as they arrive, for checks and demos. A value that
// does not decode is reported on stderr and skipped: one bad record never
// stops the consumer (a log.Fatal there would stop the whole pipeline's
// view of the topic).
//
// It joins a consumer group (--group; a fresh random group by default, so
// nothing is committed on a shared one) and starts at the latest offset
// unless --from-beginning is given (Kafka's group.id and
// auto.offset.reset=earliest).
//
// Example:
//
//	cloud-forwarder tail --from-beginning --json | jq .
package tail

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/edgepipe/sensorpipe/buffer/cmdline"
	"github.com/edgepipe/sensorpipe/buffer/reading"
	"github.com/edgepipe/sensorpipe/cloud/config"
	"github.com/edgepipe/sensorpipe/cloud/kafkaout"
)

// Run parses args and consumes until ctx is cancelled or --count readings were printed.
func Run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("tail", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "optional YAML file with the forwarder's settings (env wins)")
	group := fs.String("group", "", "consumer group id (default: a new random group)")
	fromBeginning := fs.Bool("from-beginning", false, "start at the oldest offset (else the latest) when the group has no commit")
	asJSON := fs.Bool("json", false, "print each record value (the wire-format JSON) on its own line")
	topic := fs.String("topic", "", "topic to read (default KAFKA_TOPIC)")
	count := fs.Int("count", 0, "exit after printing this many readings (0: run until interrupted)")
	if err := cmdline.ParseFlags(fs, args); err != nil {
		return err
	}
	k, err := config.LoadKafka(*cfgPath, getenv)
	if err != nil {
		return err
	}
	if *topic == "" {
		*topic = k.Topic
	}
	if *group == "" {
		var b [6]byte
		_, _ = rand.Read(b[:])
		*group = "cloud-forwarder-tail-" + hex.EncodeToString(b[:])
	}
	opts, err := kafkaout.ClientOpts(*k, "cloud-forwarder-tail")
	if err != nil {
		return err
	}
	reset := kgo.NewOffset().AtEnd()
	if *fromBeginning {
		reset = kgo.NewOffset().AtStart()
	}
	cl, err := kgo.NewClient(append(opts,
		kgo.ConsumerGroup(*group),
		kgo.ConsumeTopics(*topic),
		kgo.ConsumeResetOffset(reset),
		// Only what was printed (or reported) is committed, so --count
		// leaves the rest of a fetch to the group's next reader.
		kgo.AutoCommitMarks(),
		kgo.AutoCommitInterval(time.Second),
		kgo.FetchMaxBytes(10<<20),
		kgo.FetchMaxWait(250*time.Millisecond),
	)...)
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	defer cl.Close() // commits the marks and leaves the group
	p := printer{stdout: stdout, stderr: stderr, json: *asJSON}
	for *count == 0 || p.printed < *count {
		fs := cl.PollRecords(ctx, *count-p.printed)
		if ctx.Err() != nil {
			return nil
		}
		if err := fetchErr(fs, stderr); err != nil {
			return fmt.Errorf("read %s: %w", *topic, err)
		}
		if len(fs.Errors()) > 0 && fs.NumRecords() == 0 {
			select { // the client retries; do not print its errors in a loop
			case <-ctx.Done():
				return nil
			case <-time.After(time.Second):
			}
		}
		for it := fs.RecordIter(); !it.Done() && (*count == 0 || p.printed < *count); {
			r := it.Next()
			if err := p.print(r); err != nil {
				return err
			}
			cl.MarkCommitRecords(r)
		}
	}
	return nil
}

// printer writes records to stdout, and values that are not readings to stderr.
type printer struct {
	stdout, stderr io.Writer
	json           bool
	printed        int
}

func (p *printer) print(r *kgo.Record) error {
	rd, err := reading.Decode(r.Value)
	if err != nil {
		// The error quotes parts of the payload: printed escaped too.
		fmt.Fprintf(p.stderr, "error: %s[%d]@%d: %s\n", Text(r.Topic), r.Partition, r.Offset, Text(err.Error()))
		return nil
	}
	if p.json {
		_, err = p.stdout.Write(append(JSON(nil, r.Value), '\n'))
	} else {
		_, err = p.stdout.Write(Line(nil, &rd, int(r.Partition), r.Offset))
	}
	if err != nil {
		return err
	}
	p.printed++
	return nil
}

// fetchErr returns the first error of fs that retrying cannot cure
// (credentials or permissions); the others (the cluster unreachable, a
// leader moving) are reported on stderr and the client retries them.
func fetchErr(fs kgo.Fetches, stderr io.Writer) error {
	for _, e := range fs.Errors() {
		switch {
		case errors.Is(e.Err, context.Canceled), errors.Is(e.Err, kgo.ErrClientClosed):
		case errors.Is(e.Err, kerr.SaslAuthenticationFailed), errors.Is(e.Err, kerr.TopicAuthorizationFailed),
			errors.Is(e.Err, kerr.GroupAuthorizationFailed), errors.Is(e.Err, kerr.ClusterAuthorizationFailed):
			return e.Err
		default:
			fmt.Fprintf(stderr, "warning: %s[%d]: %s (retrying)\n", Text(e.Topic), e.Partition, Text(e.Err.Error()))
		}
	}
	return nil
}

// Line formats one reading for people:
//
//	2026-11-25T10:15:02.125Z pi-greenhouse-1 seq=48213 bme280-0x76 humidity_pct=48.2 temperature_c=21.43 p=3 off=1207
//
// Names are written with AppendText, so a payload cannot put escape
// sequences on the terminal.
func Line(dst []byte, r *reading.Reading, partition int, offset int64) []byte {
	dst = r.TS.UTC().AppendFormat(dst, "2006-01-02T15:04:05.000Z")
	dst = append(dst, ' ')
	dst = AppendText(dst, r.DeviceID)
	dst = append(dst, " seq="...)
	dst = strconv.AppendUint(dst, r.Seq, 10)
	dst = append(dst, ' ')
	dst = AppendText(dst, r.Sensor)
	if !r.TimeSynced {
		dst = append(dst, " (clock not synced)"...)
	}
	keys := make([]string, 0, len(r.Values))
	for k := range r.Values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		dst = append(dst, ' ')
		dst = AppendText(dst, k)
		dst = append(dst, '=')
		dst = strconv.AppendFloat(dst, r.Values[k], 'g', -1, 64)
	}
	dst = append(dst, " p="...)
	dst = strconv.AppendInt(dst, int64(partition), 10)
	dst = append(dst, " off="...)
	dst = strconv.AppendInt(dst, offset, 10)
	return append(dst, '\n')
}
