package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/edgepipe/sensorpipe/scripts/testkit"
)

// The intruders fault tries the broker's permission table with logins
// that exist in it: a device joining the forwarders' share group, three
// such ghosts left behind with persistent sessions, and a login taking
// another's client id. Under mosquitto's acl_file each of them made
// readings vanish (a share-group member whose deliveries the ACL drops; a
// session taken over); the table refuses each at SUBSCRIBE or CONNECT.

const (
	rogueUser = "e2e-rogue" // a device login gone bad
	roguePass = "rogue-pw-e2e"
)

// ghostUsers are the device logins that leave persistent sessions behind.
func ghostUsers() []string { return []string{"e2e-ghost-1", "e2e-ghost-2", "e2e-ghost-3"} }

// shareFilter is what the forwarders subscribe to.
func shareFilter() string { return "$share/" + shareGroup + "/sensors/+/+/reading" }

// intruders runs the fault: the rogue stays connected (subscribed if the
// broker let it) and the ghosts' sessions stay on the broker for the rest
// of the run, through every later fault. For confirm_timeout and more it
// checks that the forwarders received every reading the agent published
// and that the agent re-sent none (a reading a share-group intruder took
// is never confirmed, and comes back as a re-send).
func (in *injector) intruders(ctx context.Context) error {
	s := in.s
	f := in.begin("intruders", fmt.Sprintf("device logins try the permission table: %s subscribes to %s and stays connected through the fault; "+
		"%s connect with clean session off, subscribe to it and leave; %s connects with the agent's and a forwarder's client ids",
		rogueUser, shareFilter(), strings.Join(ghostUsers(), ", "), rogueUser))
	p0, r0, err := in.flowCounters()
	if err != nil {
		return err
	}
	var refusals []string
	fail := func(format string, a ...any) {
		in.problems = append(in.problems, "intruders: "+fmt.Sprintf(format, a...))
	}
	rogue, err := s.mqttClient(rogueUser, rogueUser, roguePass, false)
	if err != nil {
		return fmt.Errorf("intruders: %s with its own client id: %w", rogueUser, err)
	}
	defer rogue.Disconnect(100)
	if code := subscribeCode(rogue, shareFilter()); code != 0x80 {
		fail("%s joined the forwarders' share group (SUBACK %#x)", rogueUser, code)
	} else {
		refusals = append(refusals, rogueUser+" share SUBSCRIBE refused")
	}
	for _, g := range ghostUsers() {
		c, err := s.mqttClient(g, g, roguePass, true)
		if err != nil {
			return fmt.Errorf("intruders: %s: %w", g, err)
		}
		if code := subscribeCode(c, shareFilter()); code != 0x80 {
			fail("%s joined the forwarders' share group (SUBACK %#x)", g, code)
		}
		c.Disconnect(100)
	}
	refusals = append(refusals, fmt.Sprintf("%d ghosts' share SUBSCRIBEs refused", len(ghostUsers())))
	for _, cid := range []string{agentUser, forwarderID(0)} {
		c, err := s.mqttClient(rogueUser, cid, roguePass, true)
		if err == nil {
			c.Disconnect(100)
			fail("%s connected with %s's client id", rogueUser, cid)
			continue
		}
		if !errors.Is(err, packets.ErrorRefusedNotAuthorised) {
			fail("%s with %s's client id: %v, want refused as not authorised", rogueUser, cid, err)
			continue
		}
		refusals = append(refusals, rogueUser+" as "+cid+" refused")
	}
	f.End = time.Now()
	// Long enough for an unconfirmed reading to be re-sent.
	if err := in.sleep(ctx, s.opts.confirmTO+5*time.Second); err != nil {
		return err
	}
	p1, _, err := in.flowCounters()
	if err != nil {
		return err
	}
	r1 := r0
	for deadline := time.Now().Add(15 * time.Second); ; {
		_, r1, _ = in.flowCounters()
		if r1.received-r0.received >= p1.published-p0.published || time.Now().After(deadline) {
			break
		}
		if err := sleepCtx(ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
	resent := p1.resent - p0.resent
	published, received := p1.published-p0.published, r1.received-r0.received
	if received < published {
		fail("the forwarders received %.0f of the %.0f readings the agent published meanwhile", received, published)
	}
	if resent > 0 {
		fail("the agent re-sent %.0f readings: they were not confirmed in time", resent)
	}
	f.Note = fmt.Sprintf("%s; over %v the agent published %.0f readings, the forwarders received %.0f, the agent re-sent %.0f",
		strings.Join(refusals, ", "), time.Since(f.Start).Round(time.Second), published, received, resent)
	return nil
}

// flow is what the agent published and re-sent, or what the forwarders received.
type flow struct{ published, resent, received float64 }

// flowCounters scrapes the agent's published and re-sent totals and the
// sum of the forwarders' received totals.
func (in *injector) flowCounters() (agent, fwds flow, err error) {
	m, err := testkit.Metrics(in.s.status, "edge_agent_published_total", "edge_agent_resent_total")
	if err != nil {
		return agent, fwds, fmt.Errorf("agent metrics: %w", err)
	}
	agent = flow{published: m["edge_agent_published_total"], resent: m["edge_agent_resent_total"]}
	for _, addr := range in.s.fwdListen {
		v, err := testkit.Metrics(addr, "forwarder_received_total")
		if err != nil {
			return agent, fwds, fmt.Errorf("forwarder metrics: %w", err)
		}
		fwds.received += v["forwarder_received_total"]
	}
	return agent, fwds, nil
}

// mqttClient connects to the broker's TLS listener as user with client id
// cid; persistent leaves a session behind (clean session off).
func (s *stack) mqttClient(user, cid, password string, persistent bool) (mqtt.Client, error) {
	o := mqtt.NewClientOptions().AddBroker("ssl://" + s.mqtt).SetClientID(cid).SetUsername(user).SetPassword(password).
		SetTLSConfig(s.certs.Client()).SetCleanSession(!persistent).SetAutoReconnect(false).SetConnectRetry(false)
	c := mqtt.NewClient(o)
	t := c.Connect()
	if !t.WaitTimeout(10 * time.Second) {
		return nil, errors.New("no CONNACK in 10s")
	}
	return c, t.Error()
}

// subscribeCode subscribes at QoS 1 and returns the SUBACK's code (0x80:
// refused; 0xff: no answer).
func subscribeCode(c mqtt.Client, filter string) byte {
	t := c.Subscribe(filter, 1, func(mqtt.Client, mqtt.Message) {})
	if !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		return 0xff
	}
	// paho keys a shared subscription's result by its filter alone.
	key := filter
	if rest, ok := strings.CutPrefix(filter, "$share/"); ok {
		_, key, _ = strings.Cut(rest, "/")
	}
	code, ok := t.(*mqtt.SubscribeToken).Result()[key]
	if !ok {
		return 0xff
	}
	return code
}
