package tail_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/buffer/cmdline"
	"github.com/edgepipe/sensorpipe/buffer/reading"
	"github.com/edgepipe/sensorpipe/cloud/tail"
	"github.com/edgepipe/sensorpipe/scripts/testkit/pki"
	"github.com/edgepipe/sensorpipe/scripts/testkit/stack"
)

// TestTailSkipsBadValues writes readings and garbage to a TLS+SASL kfake and
// tails them from the beginning: good ones print, bad ones are reported and
// skipped, never fatal.
func TestTailSkipsBadValues(t *testing.T) {
	certs := pki.New(t)
	k := stack.StartKafka(t, certs)
	var keys []string
	var values [][]byte
	for s := uint64(1); s <= 3; s++ {
		keys = append(keys, "pi-1", "pi-1")
		values = append(values, reading.Encode(nil, stack.Reading("pi-1", s)), []byte(`{"not":"a reading"}`))
	}
	k.Produce(t, stack.Topic, keys, values...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	env := map[string]string{
		"CONFLUENT_BOOTSTRAP_SERVER_SASL": k.Addr, "CONFLUENT_API_KEY": stack.KafkaUser,
		"CONFLUENT_API_SECRET": stack.KafkaSecret, "KAFKA_CA_FILE": certs.CAFile,
	}
	for _, asJSON := range []bool{false, true} {
		var out, errOut bytes.Buffer
		args := []string{"--from-beginning", "--count", "3"}
		if asJSON {
			args = append(args, "--json")
		}
		if err := tail.Run(ctx, args, func(k string) string { return env[k] }, &out, &errOut); err != nil {
			t.Fatalf("tail: %v\n%s", err, errOut.String())
		}
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		if len(lines) != 3 {
			t.Fatalf("printed %d lines, want 3:\n%s", len(lines), out.String())
		}
		if asJSON {
			if _, err := reading.Decode([]byte(lines[2])); err != nil {
				t.Errorf("--json line is not a reading: %v", err)
			}
		} else if !strings.Contains(lines[0], "pi-1 seq=1 sim-1 humidity_pct=45.5 temperature_c=20.1") {
			t.Errorf("human line: %q", lines[0])
		}
		if got := strings.Count(errOut.String(), "error: "); got < 2 {
			t.Errorf("bad values reported %d times, want >= 2:\n%s", got, errOut.String())
		}
	}
}

func TestTailUsage(t *testing.T) {
	err := tail.Run(context.Background(), []string{"--bogus"}, func(string) string { return "" }, &bytes.Buffer{}, &bytes.Buffer{})
	if !errors.Is(err, cmdline.ErrUsage) {
		t.Fatalf("got %v, want ErrUsage", err)
	}
}
