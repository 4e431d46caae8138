package brokerauth_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/edgepipe/sensorpipe/cloud/brokerauth"
	"github.com/edgepipe/sensorpipe/cloud/fleet"
	"github.com/edgepipe/sensorpipe/scripts/testkit/broker"
)

// These tests run Debian's mosquitto (2.0.11 when written) with the
// dynamic-security file DynSec writes for logins() and try, as each login,
// what the table forbids. They skip without mosquitto unless CI=true.

const waitFor = 10 * time.Second

// subRefused is the SUBACK code of a refused subscription.
const subRefused = 0x80

func startBroker(t *testing.T, extra ...brokerauth.Login) string {
	t.Helper()
	m := broker.StartMosquitto(t, broker.MosquittoConfig{Logins: append(logins(), extra...)})
	return m.URL()
}

// client is one MQTT connection that records what it receives.
type client struct {
	c    mqtt.Client
	mu   sync.Mutex
	got  []string // "topic payload"
	more chan struct{}
	lost chan error
}

// dial connects as user with client id cid (clean session unless
// persistent) and returns the CONNECT's error, if any.
func dial(t *testing.T, url, user, cid string, persistent bool) (*client, error) {
	t.Helper()
	cl := &client{more: make(chan struct{}, 1), lost: make(chan error, 1)}
	o := mqtt.NewClientOptions().AddBroker(url).SetClientID(cid).SetUsername(user).SetPassword(user + "-pw").
		SetCleanSession(!persistent).SetAutoReconnect(false).SetConnectRetry(false).SetOrderMatters(true).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) { cl.lost <- err }).
		SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) { cl.add(m) })
	cl.c = mqtt.NewClient(o)
	tok := cl.c.Connect()
	if !tok.WaitTimeout(waitFor) {
		t.Fatalf("%s: no CONNACK in %v", user, waitFor)
	}
	if tok.Error() != nil {
		return nil, tok.Error()
	}
	t.Cleanup(func() { cl.c.Disconnect(50) })
	return cl, nil
}

// mustDial is dial for a connection the table allows.
func mustDial(t *testing.T, url, user string) *client {
	t.Helper()
	cl, err := dial(t, url, user, user, false)
	if err != nil {
		t.Fatalf("%s with its own client id refused: %v", user, err)
	}
	return cl
}

func (cl *client) add(m mqtt.Message) {
	cl.mu.Lock()
	cl.got = append(cl.got, m.Topic()+" "+string(m.Payload()))
	cl.mu.Unlock()
	select {
	case cl.more <- struct{}{}:
	default:
	}
}

// subscribe subscribes to filter at QoS 1 and returns the SUBACK code.
func (cl *client) subscribe(t *testing.T, filter string) byte {
	t.Helper()
	tok := cl.c.Subscribe(filter, 1, func(_ mqtt.Client, m mqtt.Message) { cl.add(m) })
	if !tok.WaitTimeout(waitFor) || tok.Error() != nil {
		t.Fatalf("subscribe %s: %v", filter, tok.Error())
	}
	// paho keys a shared subscription's result by its filter alone.
	key := filter
	if rest, ok := strings.CutPrefix(filter, "$share/"); ok {
		_, key, _ = strings.Cut(rest, "/")
	}
	code, ok := tok.(*mqtt.SubscribeToken).Result()[key]
	if !ok {
		t.Fatalf("subscribe %s: no result in %v", filter, tok.(*mqtt.SubscribeToken).Result())
	}
	return code
}

// mustSubscribe fails unless the broker grants the subscription.
func (cl *client) mustSubscribe(t *testing.T, filters ...string) {
	t.Helper()
	for _, f := range filters {
		if code := cl.subscribe(t, f); code == subRefused {
			t.Fatalf("subscription %s refused, the table allows it", f)
		}
	}
}

// publish publishes QoS 1 and waits for the PUBACK (mosquitto sends one
// for a publish its ACL drops, too).
func (cl *client) publish(t *testing.T, topic string, retained bool, payload string) {
	t.Helper()
	tok := cl.c.Publish(topic, 1, retained, payload)
	if !tok.WaitTimeout(waitFor) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

// waitGot waits until the client received msg (a "topic payload") and
// returns everything it received so far.
func (cl *client) waitGot(t *testing.T, msg string) []string {
	t.Helper()
	deadline := time.After(waitFor)
	for {
		cl.mu.Lock()
		got := slices.Clone(cl.got)
		cl.mu.Unlock()
		if slices.Contains(got, msg) {
			return got
		}
		select {
		case <-cl.more:
		case <-deadline:
			t.Fatalf("did not receive %q in %v; received %q", msg, waitFor, got)
		}
	}
}

// expectOnly publishes marker from via (allowed), waits until to receives
// it and fails if to received anything but want and the marker: whatever
// was published before the marker was processed (QoS 1 PUBACKs came back)
// and would have been queued to to ahead of it.
func expectOnly(t *testing.T, to, via *client, marker string, want ...string) {
	t.Helper()
	topic, payload, _ := strings.Cut(marker, " ")
	via.publish(t, topic, false, payload)
	got := to.waitGot(t, marker)
	for _, g := range got {
		if g != marker && !slices.Contains(want, g) {
			t.Errorf("received %q, which the table forbids", g)
		}
	}
	for _, w := range want {
		if !slices.Contains(got, w) {
			t.Errorf("did not receive %q", w)
		}
	}
}

// TestShareGroupClosed: a device login's SUBSCRIBE to the forwarders'
// share group (or to any reading) is refused at once, so the group's
// forwarder receives every reading; under mosquitto's acl_file the same
// SUBSCRIBE was granted and half the readings were dropped at delivery.
func TestShareGroupClosed(t *testing.T) {
	url := startBroker(t)
	fwd := mustDial(t, url, "fwd-a")
	fwd.mustSubscribe(t, "$share/fwd/sensors/+/+/reading")
	rogue := mustDial(t, url, "pi-A")
	rogue.mustSubscribe(t, "sensors/pi-A/ack")
	for _, f := range []string{"$share/fwd/sensors/+/+/reading", "$share/other/sensors/+/+/reading",
		"sensors/+/+/reading", "sensors/pi-B/+/reading", "sensors/#", "#", "$share/fwd/sensors/pi-A/ack",
		"sensors/pi-B/ack", "sensors/+/ack", "sensors/pi-B/config", "sensors/pi-B/cmd", "sensors/+/status", "sensors/+/result"} {
		if code := rogue.subscribe(t, f); code != subRefused {
			t.Errorf("device pi-A subscribing %s: SUBACK %#x, want %#x (refused)", f, code, subRefused)
		}
	}
	pub := mustDial(t, url, "pi-B")
	var want []string
	for i := range 20 {
		want = append(want, fmt.Sprintf("sensors/pi-B/s/reading %d", i))
		pub.publish(t, "sensors/pi-B/s/reading", false, fmt.Sprint(i))
	}
	expectOnly(t, fwd, pub, "sensors/pi-B/s/reading end", want...)
	expectOnly(t, rogue, mustDial(t, url, "fwd-b"), "sensors/pi-A/ack end")
}

// TestGhostSessionsStealNothing: three device logins connect once with
// clean session off, try to join the share group and leave; their
// sessions stay on the broker but hold no subscription, so the online
// forwarder receives every reading (it got 25 of 100 under acl_file).
func TestGhostSessionsStealNothing(t *testing.T) {
	ghosts := []brokerauth.Login{
		{Name: "ghost-1", Role: brokerauth.Device, Password: "ghost-1-pw"},
		{Name: "ghost-2", Role: brokerauth.Device, Password: "ghost-2-pw"},
		{Name: "ghost-3", Role: brokerauth.Device, Password: "ghost-3-pw"},
	}
	url := startBroker(t, ghosts...)
	fwd := mustDial(t, url, "fwd-a")
	fwd.mustSubscribe(t, "$share/fwd/sensors/+/+/reading")
	for _, g := range ghosts {
		cl, err := dial(t, url, g.Name, g.Name, true)
		if err != nil {
			t.Fatalf("%s: %v", g.Name, err)
		}
		if code := cl.subscribe(t, "$share/fwd/sensors/+/+/reading"); code != subRefused {
			t.Errorf("%s joined the share group (SUBACK %#x)", g.Name, code)
		}
		cl.c.Disconnect(50)
	}
	pub := mustDial(t, url, "pi-A")
	var want []string
	for i := range 100 {
		want = append(want, fmt.Sprintf("sensors/pi-A/s/reading %d", i))
		pub.publish(t, "sensors/pi-A/s/reading", false, fmt.Sprint(i))
	}
	expectOnly(t, fwd, pub, "sensors/pi-A/s/reading end", want...)
}

// TestClientIDBound: a login connecting with another login's client id (a
// device's, a forwarder's) or none is refused at CONNECT, and the login
// whose id it tried keeps its connection and its messages.
func TestClientIDBound(t *testing.T) {
	url := startBroker(t)
	victim := mustDial(t, url, "pi-B")
	victim.mustSubscribe(t, "sensors/pi-B/ack")
	fwd := mustDial(t, url, "fwd-a")
	for _, tc := range []struct{ user, cid string }{
		{"pi-A", "pi-B"}, {"pi-A", "fwd-a"}, {"fwd-b", "fwd-a"}, {"ops", "pi-B"}, {"grafana", "fwd-a"}, {"pi-A", ""}, {"pi-A", "pi-a"},
	} {
		for _, persistent := range []bool{true, false} {
			_, err := dial(t, url, tc.user, tc.cid, persistent)
			// mosquitto refuses an empty client id with a persistent
			// session before the plugin sees it.
			if !errors.Is(err, packets.ErrorRefusedNotAuthorised) && (tc.cid != "" || !errors.Is(err, packets.ErrorRefusedIDRejected)) {
				t.Errorf("%s connecting as client id %q (persistent %v): %v, want refused", tc.user, tc.cid, persistent, err)
			}
		}
	}
	select {
	case err := <-victim.lost:
		t.Fatalf("pi-B lost its connection: %v", err)
	default:
	}
	expectOnly(t, victim, fwd, "sensors/pi-B/ack confirmed")
}

// TestForwarderPublishesAcksOnly: the forwarder's login confirms to every
// device, but a reading, a status, a config or a command it publishes
// reaches nobody.
func TestForwarderPublishesAcksOnly(t *testing.T) {
	url := startBroker(t)
	dev := mustDial(t, url, "pi-A")
	dev.mustSubscribe(t, "sensors/pi-A/ack", "sensors/pi-A/config", "sensors/pi-A/cmd", "sensors/$fleet/config")
	other := mustDial(t, url, "fwd-b")
	other.mustSubscribe(t, "sensors/+/+/reading", "sensors/+/status")
	fwd := mustDial(t, url, "fwd-a")
	for _, topic := range []string{"sensors/pi-A/s/reading", "sensors/pi-A/status", "sensors/pi-A/config",
		"sensors/pi-A/cmd", "sensors/$fleet/config", "sensors/$group/g/update"} {
		fwd.publish(t, topic, false, "forged")
	}
	expectOnly(t, dev, fwd, "sensors/pi-A/ack real")
	expectOnly(t, other, mustDial(t, url, "pi-B"), "sensors/pi-B/s/reading real")
}

// TestDevicePublishesOwnOnly: a device publishes its readings, status and
// results; acks, config and commands (its own or another's) and another
// device's topics reach nobody.
func TestDevicePublishesOwnOnly(t *testing.T) {
	url := startBroker(t)
	victim := mustDial(t, url, "pi-B")
	victim.mustSubscribe(t, "sensors/pi-B/ack", "sensors/pi-B/config", "sensors/pi-B/cmd",
		"sensors/$group/+/config", "sensors/$group/+/update", "sensors/$fleet/config")
	self := mustDial(t, url, "fwd-b") // stands for pi-A's own topics' readers
	self.mustSubscribe(t, "sensors/+/+/reading", "sensors/+/status")
	ops := mustDial(t, url, "ops")
	ops.mustSubscribe(t, "sensors/+/result", "sensors/+/config")
	rogue := mustDial(t, url, "pi-A")
	for _, topic := range []string{"sensors/pi-B/ack", "sensors/pi-B/config", "sensors/pi-B/cmd",
		"sensors/$group/g/config", "sensors/$group/g/update", "sensors/$fleet/config",
		"sensors/pi-A/ack", "sensors/pi-A/config", "sensors/pi-A/cmd",
		"sensors/pi-B/s/reading", "sensors/pi-B/status", "sensors/pi-B/result"} {
		rogue.publish(t, topic, false, "forged")
	}
	rogue.publish(t, "sensors/pi-A/s/reading", false, "own")
	rogue.publish(t, "sensors/pi-A/status", true, "own")
	rogue.publish(t, "sensors/pi-A/result", false, "own")
	expectOnly(t, victim, mustDial(t, url, "fwd-a"), "sensors/pi-B/ack real")
	expectOnly(t, self, mustDial(t, url, "pi-B"), "sensors/pi-B/s/reading real",
		"sensors/pi-A/s/reading own", "sensors/pi-A/status own")
	expectOnly(t, ops, ops, "sensors/pi-B/config marker", "sensors/pi-A/result own")
}

// TestOperatorAndMonitor: the operator's config (device, group, fleet),
// commands and update offers reach the device and its results come back;
// the monitoring login reads the retained status and may subscribe to
// nothing else, publish nothing.
func TestOperatorAndMonitor(t *testing.T) {
	url := startBroker(t)
	dev := mustDial(t, url, "pi-A")
	dev.mustSubscribe(t, "sensors/pi-A/config", "sensors/pi-A/cmd", "sensors/$group/g/config", "sensors/$group/g/update", "sensors/$fleet/config")
	dev.publish(t, "sensors/pi-A/status", true, "online")
	ops := mustDial(t, url, "ops")
	ops.mustSubscribe(t, "sensors/+/result")
	for _, topic := range []string{"sensors/pi-A/config", "sensors/$group/g/config", "sensors/$fleet/config", "sensors/pi-A/cmd"} {
		ops.publish(t, topic, false, "signed")
	}
	for _, topic := range []string{"sensors/pi-A/ack", "sensors/pi-A/s/reading"} {
		ops.publish(t, topic, false, "forged")
	}
	expectOnly(t, dev, ops, "sensors/$group/g/update signed", "sensors/pi-A/config signed",
		"sensors/$group/g/config signed", "sensors/$fleet/config signed", "sensors/pi-A/cmd signed")
	expectOnly(t, ops, dev, "sensors/pi-A/result done")

	mon := mustDial(t, url, "grafana")
	for _, f := range []string{"sensors/+/+/reading", "$share/m/sensors/+/+/reading", "sensors/+/ack", "sensors/+/config",
		"sensors/+/cmd", "sensors/+/result", "sensors/#", "#", "$share/m/sensors/+/status", "$SYS/#"} {
		if code := mon.subscribe(t, f); code != subRefused {
			t.Errorf("monitoring subscribing %s: SUBACK %#x, want refused", f, code)
		}
	}
	mon.mustSubscribe(t, "sensors/+/status")
	mon.publish(t, "sensors/pi-A/config", false, "forged")
	mon.publish(t, "sensors/pi-A/ack", false, "forged")
	mon.waitGot(t, "sensors/pi-A/status online")
	expectOnly(t, mon, dev, "sensors/pi-A/status running", "sensors/pi-A/status online")
	expectOnly(t, dev, ops, "sensors/pi-A/cmd second", "sensors/$group/g/update signed", "sensors/pi-A/config signed",
		"sensors/$group/g/config signed", "sensors/$fleet/config signed", "sensors/pi-A/cmd signed")
}

// TestFleetToolAsOperator: `cloud-forwarder fleet config push` with the
// operator's login of the table reaches the device (the tool connects with
// its user name as client id, the only one the table accepts).
func TestFleetToolAsOperator(t *testing.T) {
	url := startBroker(t)
	dev := mustDial(t, url, "pi-A")
	dev.mustSubscribe(t, "sensors/$fleet/config")
	dir := t.TempDir()
	key, pub := filepath.Join(dir, "fleet.key"), filepath.Join(dir, "fleet-keys.pem")
	var out bytes.Buffer
	env := map[string]string{"FLEET_MQTT_URL": url, "FLEET_USERNAME": "ops", "FLEET_PASSWORD_FILE": filepath.Join(dir, "pw"),
		"FLEET_KEY_FILE": key}
	getenv := func(k string) string { return env[k] }
	if err := fleet.Run(context.Background(), []string{"keygen", key, pub}, getenv, &out, &out); err != nil {
		t.Fatalf("fleet keygen: %v\n%s", err, out.String())
	}
	doc := filepath.Join(dir, "interval.yaml")
	for p, text := range map[string]string{env["FLEET_PASSWORD_FILE"]: "ops-pw\n", doc: "sensor_interval: 30s\n"} {
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := fleet.Run(ctx, []string{"config", "push", "--fleet", doc}, getenv, &out, &out); err != nil {
		t.Fatalf("fleet config push as the operator: %v\n%s", err, out.String())
	}
	deadline := time.After(waitFor)
	for {
		dev.mu.Lock()
		n := len(dev.got)
		dev.mu.Unlock()
		if n > 0 {
			break
		}
		select {
		case <-dev.more:
		case <-deadline:
			t.Fatal("the device did not receive the operator's fleet config")
		}
	}
}

// TestRetiredForwarderKeepsItsTurn pins down the mosquitto 2.0 behaviour
// docs/FORWARDER.md warns about: a forwarder login that joined the share
// group with a persistent session and went away still gets its turn of
// the group's messages, queued for it; connecting once with clean session
// ends that.
func TestRetiredForwarderKeepsItsTurn(t *testing.T) {
	url := startBroker(t)
	retired, err := dial(t, url, "fwd-b", "fwd-b", true)
	if err != nil {
		t.Fatal(err)
	}
	retired.mustSubscribe(t, "$share/fwd/sensors/+/+/reading")
	retired.c.Disconnect(50)
	fwd := mustDial(t, url, "fwd-a")
	// The markers go on the status topic, outside the group: each of the
	// group's messages goes to one member only, a marker too.
	fwd.mustSubscribe(t, "$share/fwd/sensors/+/+/reading", "sensors/+/status")
	pub := mustDial(t, url, "pi-A")
	for i := range 10 {
		pub.publish(t, "sensors/pi-A/s/reading", false, fmt.Sprint(i))
	}
	pub.publish(t, "sensors/pi-A/status", false, "m1")
	got := fwd.waitGot(t, "sensors/pi-A/status m1")
	if len(got) == 11 {
		t.Fatalf("the online forwarder received all 10: mosquitto no longer queues for an offline share-group member; update docs/FORWARDER.md")
	}
	// Retire it for good: one clean-session connection drops its session.
	gone, err := dial(t, url, "fwd-b", "fwd-b", false)
	if err != nil {
		t.Fatal(err)
	}
	gone.c.Disconnect(50)
	want := got
	for i := range 10 {
		want = append(want, fmt.Sprintf("sensors/pi-A/s/reading after-%d", i))
		pub.publish(t, "sensors/pi-A/s/reading", false, fmt.Sprintf("after-%d", i))
	}
	expectOnly(t, fwd, pub, "sensors/pi-A/status m2", want...)
}
