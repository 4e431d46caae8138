package kafka_test

import (
	"context"
	"crypto/tls"
	"net"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"

	"github.com/edgepipe/sensorpipe/scripts/testkit/kafka"
	"github.com/edgepipe/sensorpipe/scripts/testkit/pki"
)

// TestThroughProxy produces over TLS + SASL PLAIN through the proxy, then
// reads the topic back while Kafka is cut off: a reader that dials
// DirectAddr in place of the advertised address still reaches kfake.
func TestThroughProxy(t *testing.T) {
	certs := pki.New(t)
	k := kafka.New(t, kafka.Options{PKI: certs, User: "key", Password: "secret",
		Topics: map[string]int32{"t": 2}, Proxy: true})
	values := [][]byte{[]byte("1"), []byte("2"), []byte("3"), []byte("4"), []byte("5")}
	k.Produce(t, "t", []string{"d1", "d1", "d1", "d1", "d1"}, values...)
	if n := len(k.Proxy().AcceptsSince(time.Time{})); n == 0 {
		t.Fatal("producer did not go through the proxy")
	}

	k.Cut()
	redirect := func(ctx context.Context, network, host string) (net.Conn, error) {
		if host == k.Addr {
			host = k.DirectAddr()
		}
		cfg := certs.Client()
		cfg.ServerName = "127.0.0.1"
		return (&tls.Dialer{Config: cfg}).DialContext(ctx, network, host)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.Addr), kgo.Dialer(redirect),
		kgo.SASL(plain.Auth{User: "key", Pass: "secret"}.AsMechanism()),
		kgo.ConsumeTopics("t"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var got []string
	for len(got) < len(values) && ctx.Err() == nil {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) { got = append(got, string(r.Value)) })
	}
	if len(got) != len(values) {
		t.Fatalf("read %v while cut off, want %d records", got, len(values))
	}
	for i, v := range got { // one key, one partition: in order
		if v != string(values[i]) {
			t.Fatalf("record %d = %s, want %s", i, v, values[i])
		}
	}

	// The cut is real: a client on the advertised address gets nothing.
	if recs := k.ReadN(t, "t", 1, 2*time.Second, 0); len(recs) != 0 {
		t.Fatalf("read %d records through a cut proxy", len(recs))
	}
	k.Restore()
	if recs := k.ReadN(t, "t", len(values), 30*time.Second, 0); len(recs) != len(values) {
		t.Fatalf("read %d records after Restore, want %d", len(recs), len(values))
	}
}
