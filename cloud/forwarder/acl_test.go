package forwarder_test

import (
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgepipe/sensorpipe/buffer/reading"
	"github.com/edgepipe/sensorpipe/cloud/brokerauth"
	"github.com/edgepipe/sensorpipe/scripts/testkit/broker"
	"github.com/edgepipe/sensorpipe/scripts/testkit/pki"
	"github.com/edgepipe/sensorpipe/scripts/testkit/stack"
)

// TestBrokerACL runs the real forwarder against mosquitto with the shipped
// permission table (brokerauth.DynSec, the dynamic-security plugin): each
// device has its own login, bound to its client id, and the forwarder's
// login is its FORWARDER_ID. A reading pi-A publishes on pi-B's topic
// never reaches the forwarder, pi-A may not subscribe to pi-B's
// confirmations, and both devices' own readings are forwarded and
// confirmed to them, by a forwarder allowed to read readings and write
// acks only.
func TestBrokerACL(t *testing.T) {
	users := map[string]string{"fwd-acl": "fwd-pw", "pi-A": "a-pw", "pi-B": "b-pw"}
	m := broker.StartMosquitto(t, broker.MosquittoConfig{Logins: []brokerauth.Login{
		{Name: "fwd-acl", Role: brokerauth.Forwarder, Password: users["fwd-acl"]},
		{Name: "pi-A", Role: brokerauth.Device, Password: users["pi-A"]},
		{Name: "pi-B", Role: brokerauth.Device, Password: users["pi-B"]},
	}})
	certs := pki.New(t)
	k := stack.StartKafka(t, certs)
	env := map[string]string{
		"HIVEMQ_URL": m.URL(), "HIVEMQ_USERNAME": "fwd-acl", "HIVEMQ_PASSWORD": users["fwd-acl"],
		"CONFLUENT_BOOTSTRAP_SERVER_SASL": k.Addr, "CONFLUENT_API_KEY": stack.KafkaUser,
		"CONFLUENT_API_SECRET": stack.KafkaSecret, "KAFKA_CA_FILE": certs.CAFile,
		"FORWARDER_ID": "fwd-acl", "FORWARDER_LISTEN": "127.0.0.1:0", "FORWARDER_CONFIRM_INTERVAL": "100ms",
	}
	fwd := start(t, env) // ready: its subscription was granted
	device := func(id string) broker.PubOptions {
		return broker.PubOptions{URL: m.URL(), Username: id, Password: users[id], ClientID: id}
	}
	// Each device publishes where it reads its confirmations: its login
	// holds one connection, with its own client id.
	devA := stack.CollectAcksWith(t, stack.AckOptions{PubOptions: device("pi-A"), Filter: ackTopic("pi-A")})
	devB := stack.CollectAcksWith(t, stack.AckOptions{PubOptions: device("pi-B"), Filter: ackTopic("pi-B")})

	// pi-A cannot connect as anyone but itself (brokerauth's tests try
	// every forbidden subscription and publish, pi-B's confirmations too).
	spy := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(m.URL()).SetClientID("pi-A-spy").
		SetUsername("pi-A").SetPassword(users["pi-A"]))
	if tok := spy.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() == nil {
		spy.Disconnect(0)
		t.Fatalf("pi-A connected with another client id: %v", tok.Error())
	}

	spoof := stack.Reading("pi-B", 99)
	devA.Publish(t, stack.ReadingTopic("pi-B"), reading.Encode(nil, spoof)) // the broker drops it
	devA.Publish(t, stack.ReadingTopic("pi-A"), reading.Encode(nil, stack.Reading("pi-A", 1)))
	devB.Publish(t, stack.ReadingTopic("pi-B"), reading.Encode(nil, stack.Reading("pi-B", 1)))

	recs := k.ReadN(t, stack.Topic, 2, 20*time.Second, 500*time.Millisecond)
	checkReadings(t, recs, []string{"pi-A", "pi-B"}, 1, "fwd-acl")
	if len(recs) != 2 {
		t.Errorf("%d records on the main topic, want pi-A's and pi-B's own", len(recs))
	}
	if got := metric(t, fwd.addr, "forwarder_received_total"); got != 2 {
		t.Errorf("the forwarder received %v messages, want 2: the broker let the spoofed one through", got)
	}
	waitConfirmed(t, devA, []string{"pi-A"}, 1, 1, 10*time.Second)
	waitConfirmed(t, devB, []string{"pi-B"}, 1, 1, 10*time.Second)
}

// TestForwarderIDMustBeItsLogin: under the shipped table a forwarder whose
// FORWARDER_ID (its client id) is not its broker login is refused at
// CONNECT; it stays not ready and says which settings to line up.
func TestForwarderIDMustBeItsLogin(t *testing.T) {
	m := broker.StartMosquitto(t, broker.MosquittoConfig{Logins: []brokerauth.Login{
		{Name: "fwd-a", Role: brokerauth.Forwarder, Password: "fwd-pw"},
	}})
	certs := pki.New(t)
	k := stack.StartKafka(t, certs)
	env := map[string]string{
		"HIVEMQ_URL": m.URL(), "HIVEMQ_USERNAME": "fwd-a", "HIVEMQ_PASSWORD": "fwd-pw",
		"CONFLUENT_BOOTSTRAP_SERVER_SASL": k.Addr, "CONFLUENT_API_KEY": stack.KafkaUser,
		"CONFLUENT_API_SECRET": stack.KafkaSecret, "KAFKA_CA_FILE": certs.CAFile,
		"FORWARDER_ID": "fwd-b", "FORWARDER_LISTEN": "127.0.0.1:0",
	}
	addr, logs, stop := startLogged(t, env)
	defer stop()
	waitLog(t, logs, "FORWARDER_ID (the client id) equals HIVEMQ_USERNAME")
	if code, _ := get(addr, "/readyz"); code != 503 {
		t.Errorf("/readyz = %d while the broker refuses the login", code)
	}
}
