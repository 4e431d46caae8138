package forwarder_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgepipe/sensorpipe/buffer/reading"
	"github.com/edgepipe/sensorpipe/scripts/testkit/broker"
	"github.com/edgepipe/sensorpipe/scripts/testkit/pki"
	"github.com/edgepipe/sensorpipe/scripts/testkit/stack"
)

// TestBrokerACL runs mosquitto with the ACL file docs/FORWARDER.md shows
// (testdata/mosquitto.acl, checked to be the same text): each device has its
// own user; a reading pi-A publishes on pi-B's topic never reaches the
// forwarder, pi-A may not read pi-B's confirmations, and both devices'
// own readings are forwarded and confirmed to them, by a forwarder allowed
// to read readings and write acks only.
func TestBrokerACL(t *testing.T) {
	aclFile, err := filepath.Abs("testdata/mosquitto.acl")
	if err != nil {
		t.Fatal(err)
	}
	acl, err := os.ReadFile(aclFile)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile("../../docs/FORWARDER.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(doc), "```\n"+string(acl)+"```\n") {
		t.Fatal("docs/FORWARDER.md does not show testdata/mosquitto.acl verbatim")
	}

	users := map[string]string{"forwarder": "fwd-pw", "pi-A": "a-pw", "pi-B": "b-pw"}
	m := broker.StartMosquitto(t, broker.MosquittoConfig{Users: users, Extra: []string{"acl_file " + aclFile}})
	certs := pki.New(t)
	k := stack.StartKafka(t, certs)
	env := map[string]string{
		"HIVEMQ_URL": m.URL(), "HIVEMQ_USERNAME": "forwarder", "HIVEMQ_PASSWORD": users["forwarder"],
		"CONFLUENT_BOOTSTRAP_SERVER_SASL": k.Addr, "CONFLUENT_API_KEY": stack.KafkaUser,
		"CONFLUENT_API_SECRET": stack.KafkaSecret, "KAFKA_CA_FILE": certs.CAFile,
		"FORWARDER_ID": "fwd-acl", "FORWARDER_LISTEN": "127.0.0.1:0", "FORWARDER_CONFIRM_INTERVAL": "100ms",
	}
	fwd := start(t, env) // ready: its subscription was granted
	device := func(id string) broker.PubOptions {
		return broker.PubOptions{URL: m.URL(), Username: id, Password: users[id], ClientID: id + "-acks"}
	}
	ackA := stack.CollectAcksWith(t, stack.AckOptions{PubOptions: device("pi-A"), Filter: ackTopic("pi-A")})
	ackB := stack.CollectAcksWith(t, stack.AckOptions{PubOptions: device("pi-B"), Filter: ackTopic("pi-B")})

	// pi-A may not read pi-B's confirmations: mosquitto 2.0 grants the
	// SUBSCRIBE (MQTT 3.1.1) and then delivers nothing the ACL forbids.
	spyOpts := device("pi-A")
	spyOpts.ClientID = "pi-A-spy"
	spy := stack.CollectAcksWith(t, stack.AckOptions{PubOptions: spyOpts, Filter: ackTopic("pi-B")})

	pubOpts := func(id string) broker.PubOptions {
		o := device(id)
		o.ClientID = id
		return o
	}
	pubA := broker.NewPublisher(t, pubOpts("pi-A"))
	pubB := broker.NewPublisher(t, pubOpts("pi-B"))
	spoof := stack.Reading("pi-B", 99)
	pubA.Publish(t, stack.ReadingTopic("pi-B"), reading.Encode(nil, spoof)) // the broker drops it
	pubA.Publish(t, stack.ReadingTopic("pi-A"), reading.Encode(nil, stack.Reading("pi-A", 1)))
	pubB.Publish(t, stack.ReadingTopic("pi-B"), reading.Encode(nil, stack.Reading("pi-B", 1)))

	recs := k.ReadN(t, stack.Topic, 2, 20*time.Second, 500*time.Millisecond)
	checkReadings(t, recs, []string{"pi-A", "pi-B"}, 1, "fwd-acl")
	if len(recs) != 2 {
		t.Errorf("%d records on the main topic, want pi-A's and pi-B's own", len(recs))
	}
	if got := metric(t, fwd.addr, "forwarder_received_total"); got != 2 {
		t.Errorf("the forwarder received %v messages, want 2: the broker let the spoofed one through", got)
	}
	waitConfirmed(t, ackA, []string{"pi-A"}, 1, 1, 10*time.Second)
	waitConfirmed(t, ackB, []string{"pi-B"}, 1, 1, 10*time.Second)
	time.Sleep(300 * time.Millisecond) // three intervals more for a leak to show
	if got := spy.Acks(); len(got) != 0 {
		t.Errorf("pi-A read %d of pi-B's confirmations", len(got))
	}
}
