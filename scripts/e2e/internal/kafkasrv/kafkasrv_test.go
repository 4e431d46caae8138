package kafkasrv_test

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"

	"github.com/edgepipe/sensorpipe/buffer/reading"
	"github.com/edgepipe/sensorpipe/scripts/e2e/internal/kafkasrv"
	"github.com/edgepipe/sensorpipe/scripts/e2e/internal/topicread"
	"github.com/edgepipe/sensorpipe/scripts/testkit/pki"
	"github.com/edgepipe/sensorpipe/scripts/testkit/tcpproxy"
)

// TestThroughProxy produces over TLS + SASL PLAIN through the proxy, then
// reads the topic back while the proxy refuses connections: the reader's
// redirect reaches kfake directly.
func TestThroughProxy(t *testing.T) {
	certs := pki.New(t)
	srvTLS, cliTLS := certs.Server, certs.Client()
	srv, err := kafkasrv.Start(kafkasrv.Options{TLS: srvTLS, User: "key", Password: "secret", Topics: []string{"t"}, Partitions: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	prod, err := kgo.NewClient(kgo.SeedBrokers(srv.Addr()), kgo.DialTLSConfig(cliTLS),
		kgo.SASL(plain.Auth{User: "key", Pass: "secret"}.AsMechanism()), kgo.DefaultProduceTopic("t"))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	for seq := uint64(1); seq <= 5; seq++ {
		r := reading.Reading{DeviceID: "d1", Seq: seq, Sensor: "s", Kind: "sim", TS: time.Now().UTC(), Values: map[string]float64{"temperature_c": 20}}
		if err := prod.ProduceSync(ctx, &kgo.Record{Key: []byte("d1"), Value: reading.Encode(nil, &r)}).FirstErr(); err != nil {
			t.Fatalf("produce: %v", err)
		}
	}
	if n := len(srv.Proxy().AcceptsSince(time.Time{})); n == 0 {
		t.Fatal("producer did not go through the proxy")
	}

	srv.Proxy().SetMode(tcpproxy.Refuse)
	cfg := topicread.Config{Bootstrap: srv.Addr(), TLS: cliTLS, User: "key", Password: "secret", Topic: "t", Partitions: 2,
		Redirect: map[string]string{srv.Addr(): srv.DirectAddr()}}
	recs, err := topicread.ReadAll(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 5 {
		t.Fatalf("read %d records, want 5", len(recs))
	}
	for i, r := range recs {
		if r.Err != nil || r.Reading.Seq != uint64(i+1) {
			t.Fatalf("record %d: seq %d err %v", i, r.Reading.Seq, r.Err)
		}
	}
}
