package fleet_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgepipe/sensorpipe/agent/update/release"
	"github.com/edgepipe/sensorpipe/buffer/cmdline"
	"github.com/edgepipe/sensorpipe/buffer/heartbeat"
	"github.com/edgepipe/sensorpipe/buffer/sign"
	"github.com/edgepipe/sensorpipe/cloud/brokerauth"
	"github.com/edgepipe/sensorpipe/cloud/fleet"
	"github.com/edgepipe/sensorpipe/scripts/testkit/broker"
)

// as connects to url as login (client id = its name, password name-pw).
func as(t *testing.T, url, login string) mqtt.Client {
	t.Helper()
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(url).SetClientID(login).SetUsername(login).
		SetPassword(login + "-pw").SetCleanSession(true).SetAutoReconnect(false))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect as %s: %v", login, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(50) })
	return c
}

// heartbeatOf publishes a device's retained heartbeat as the device.
func heartbeatOf(t *testing.T, url, dev, agent string, u *heartbeat.Update) {
	t.Helper()
	hb := heartbeat.Heartbeat{V: 2, State: heartbeat.Online, TS: time.Now().Unix(), Agent: agent, Update: u}
	b, err := json.Marshal(hb)
	if err != nil {
		t.Fatal(err)
	}
	c := as(t, url, dev)
	if tok := c.Publish(heartbeat.Topic("sensors", dev), 1, true, b); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("%s: publish heartbeat: %v", dev, tok.Error())
	}
	c.Disconnect(50)
}

// offerSeen is the group's retained offer as a device receives it.
func offerSeen(t *testing.T, url, dev string) []byte {
	t.Helper()
	got := make(chan []byte, 1)
	c := as(t, url, dev)
	tok := c.Subscribe("sensors/$group/+/update", 1, func(_ mqtt.Client, m mqtt.Message) {
		select {
		case got <- m.Payload():
		default:
		}
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	defer c.Disconnect(50)
	select {
	case p := <-got:
		return p
	case <-time.After(10 * time.Second):
		t.Fatal("no retained offer")
	}
	return nil
}

// TestUpdateRollout: an operator publishes a release to 10 % of a group,
// raises it to 100 % (same rollout), reads each device's stage from the
// retained heartbeats, and the rollout aborts itself when the failures
// reach the threshold; abort stops it by hand. On mosquitto with the
// shipped permission table.
func TestUpdateRollout(t *testing.T) {
	devices := []string{"pi-1", "pi-2", "pi-3", "pi-4", "pi-5"}
	var logins []brokerauth.Login
	for _, d := range devices {
		logins = append(logins, brokerauth.Login{Name: d, Role: brokerauth.Device, Password: d + "-pw"})
	}
	logins = append(logins, brokerauth.Login{Name: "ops", Role: brokerauth.Operator, Password: "ops-pw"},
		brokerauth.Login{Name: "grafana", Role: brokerauth.Monitor, Password: "grafana-pw"})
	url := broker.StartMosquitto(t, broker.MosquittoConfig{Logins: logins}).URL()

	r := &rig{t: t, dir: t.TempDir()}
	rel, err := sign.Generate()
	if err != nil {
		t.Fatal(err)
	}
	fleetKey, err := sign.Generate()
	if err != nil {
		t.Fatal(err)
	}
	keyFile := r.write("fleet.key", string(fleetKey.PrivatePEM()))
	relPub := r.write("release.pub", string(rel.PublicPEM()))
	var files []string
	for _, a := range []string{"armv7", "arm64"} {
		m := release.Manifest{Version: "1.6.0", Arch: a, Size: 4, SHA256: strings.Repeat("ab", 32),
			URL: "https://releases.example/1.6.0/" + release.BinaryFile("1.6.0", a)}
		p, err := release.SignManifest(m, rel)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, r.write(release.ManifestFile("1.6.0", a), string(p)+"\n"))
	}
	r.env = map[string]string{"FLEET_MQTT_URL": url, "FLEET_USERNAME": "ops", "FLEET_PASSWORD": "ops-pw",
		"FLEET_KEY_FILE": keyFile, "FLEET_STATUS_USERNAME": "grafana", "FLEET_STATUS_PASSWORD": "grafana-pw"}

	// Refused before anything is published.
	for _, args := range [][]string{
		{"update", "publish", files[0]},                                      // no group
		{"update", "publish", "--group", "gh"},                               // no manifests, no offer
		{"update", "publish", "--group", "gh", "--percent", "150", files[0]}, // percent
		{"update", "publish", "--group", "gh", "--release-keys", r.write("other.pub", string(fleetKey.PublicPEM())), files[0]},
		{"update", "status", "--group", "gh"}, // no offer
		{"update", "abort", "--group", "gh"},  // no offer
		{"update", "nope"},
	} {
		if out, err := r.run(args...); !errors.Is(err, cmdline.ErrUsage) {
			t.Errorf("%q: %v, want a usage error\n%s", args, err, out)
		}
	}

	args := append([]string{"update", "publish", "--group", "gh", "--release-keys", relPub}, files...)
	out, err := r.run(args...)
	if err != nil || !strings.Contains(out, "of 1.6.0 to group gh at 10 % (abort at 20 % failures)") {
		t.Fatalf("publish: %v\n%s", err, out)
	}
	first := openSeen(t, url, fleetKey)
	if first.Percent != 10 || first.State != release.StateActive || len(first.Manifests) != 2 {
		t.Fatalf("offer at 10 %%: %+v", first)
	}
	// The canaries take it, the others not yet.
	in, out10 := 0, 0
	for _, d := range devices {
		_, err := release.Decide(first, release.Device{ID: d, Group: "gh", Arch: "arm64", Version: "1.5.0"}, rel.Verifier())
		switch {
		case err == nil:
			in++
		case errors.Is(err, release.ErrNotInRollout):
			out10++
		default:
			t.Fatalf("%s: %v", d, err)
		}
	}
	t.Logf("at 10 %%: %d in, %d out", in, out10)

	// Raised to 100 %: the same rollout, the same manifests.
	if out, err := r.run("update", "publish", "--group", "gh", "--percent", "100", "--abort-at", "40"); err != nil {
		t.Fatalf("raise: %v\n%s", err, out)
	}
	all := openSeen(t, url, fleetKey)
	if all.Rollout != first.Rollout || all.Percent != 100 || all.AbortPercent != 40 || len(all.Manifests) != 2 {
		t.Fatalf("offer at 100 %%: %+v (first %s)", all, first.Rollout)
	}
	for _, d := range devices {
		if _, err := release.Decide(all, release.Device{ID: d, Group: "gh", Arch: "armv7", Version: "1.5.0"}, rel.Verifier()); err != nil {
			t.Fatalf("%s at 100 %%: %v", d, err)
		}
	}

	// The devices report: 2 committed, 1 on trial, 1 refused by policy
	// (runs a newer version), 1 rolled back: 1 failure of 4 taken, 25 %.
	up := func(state, errText string) *heartbeat.Update {
		return &heartbeat.Update{State: state, Version: "1.6.0", From: "1.5.0", Rollout: all.Rollout, Error: errText, At: time.Now().Unix()}
	}
	heartbeatOf(t, url, "pi-1", "1.6.0", up(heartbeat.UpdateCommitted, ""))
	heartbeatOf(t, url, "pi-2", "1.6.0", up(heartbeat.UpdateCommitted, ""))
	heartbeatOf(t, url, "pi-3", "1.6.0", up(heartbeat.UpdateTrial, ""))
	heartbeatOf(t, url, "pi-4", "1.7.0", up(heartbeat.UpdateRefused, release.ErrNotNewer.Error()+": offered 1.6.0, running 1.7.0"))
	heartbeatOf(t, url, "pi-5", "1.5.0", up(heartbeat.UpdateRolledBack, "no reading stored within the deadline"))
	out, err = r.run("update", "status", "--group", "gh", "--json")
	if err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	var st fleet.Rollout
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	if len(st.Devices) != 5 || st.Taken != 4 || st.Failures != 1 || st.Committed != 2 || st.Stages["committed"] != 2 || st.Aborted {
		t.Fatalf("status: %+v", st)
	}
	out, err = r.run("update", "status", "--group", "gh")
	if err != nil || !strings.Contains(out, "taken 4, committed 2, failures 1 (25.0 %)") || !strings.Contains(out, "ROLLED_BACK") {
		t.Fatalf("status: %v\n%s", err, out)
	}

	// A second failure: 2 of 4 = 50 % >= 40 %: status aborts the rollout.
	heartbeatOf(t, url, "pi-3", "1.5.0", up(heartbeat.UpdateRolledBack, "3 starts without a commit"))
	out, err = r.run("update", "status", "--group", "gh", "--no-abort")
	if err != nil || strings.Contains(out, "ABORTED") {
		t.Fatalf("status --no-abort: %v\n%s", err, out)
	}
	out, err = r.run("update", "status", "--group", "gh")
	if !errors.Is(err, fleet.ErrAborted) || !strings.Contains(out, "ABORTED now") {
		t.Fatalf("status at 50 %% failures: %v\n%s", err, out)
	}
	aborted := openSeen(t, url, fleetKey)
	if aborted.State != release.StateAborted || aborted.Rollout != all.Rollout {
		t.Fatalf("after the abort: %+v", aborted)
	}
	if _, err := release.Decide(aborted, release.Device{ID: "pi-1", Group: "gh", Arch: "armv7", Version: "1.5.0"}, rel.Verifier()); !errors.Is(err, release.ErrAborted) {
		t.Fatalf("a device decides on the aborted offer: %v", err)
	}
	// Already aborted: status reports and does not abort again.
	if out, err := r.run("update", "status", "--group", "gh"); err != nil || strings.Contains(out, "ABORTED now") {
		t.Fatalf("status of an aborted rollout: %v\n%s", err, out)
	}

	// Publishing the version again after an abort is a new rollout.
	out, err = r.run(append([]string{"update", "publish", "--group", "gh"}, files...)...)
	if err != nil {
		t.Fatalf("publish again: %v\n%s", err, out)
	}
	again := openSeen(t, url, fleetKey)
	if again.Rollout == all.Rollout || again.State != release.StateActive || again.Percent != 10 {
		t.Fatalf("published again after the abort: %+v", again)
	}
	if out, err := r.run("update", "abort", "--group", "gh"); err != nil || !strings.Contains(out, "aborted rollout "+again.Rollout) {
		t.Fatalf("abort: %v\n%s", err, out)
	}
	if o := openSeen(t, url, fleetKey); o.State != release.StateAborted {
		t.Fatalf("after abort: %+v", o)
	}

	// An offer signed by another key (say, the release key) is refused by
	// the devices.
	relKey := r.write("release.key", string(rel.PrivatePEM()))
	if out, err := r.run("update", "publish", "--group", "gh", "--key", relKey, files[0]); err != nil {
		t.Fatalf("publish with another key: %v\n%s", err, out)
	}
	if _, err := release.OpenOffer(offerSeen(t, url, "pi-1"), "gh", fleetKey.Verifier()); !errors.Is(err, release.ErrSignature) {
		t.Fatalf("an offer signed by the release key: %v", err)
	}
	// A device may not publish an offer (the permission table).
	c := as(t, url, "pi-2")
	tok := c.Publish("sensors/$group/gh/update", 1, true, []byte(`{"v":1}`))
	tok.WaitTimeout(5 * time.Second)
	if p := offerSeen(t, url, "pi-1"); string(p) == `{"v":1}` {
		t.Fatal("a device replaced the group's offer")
	}
}

func openSeen(t *testing.T, url string, fleetKey *sign.Signer) release.Offer {
	t.Helper()
	o, err := release.OpenOffer(offerSeen(t, url, "pi-1"), "gh", fleetKey.Verifier())
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func TestSummarize(t *testing.T) {
	o := &release.Offer{Rollout: "r1", Version: "1.6.0", Percent: 100, AbortPercent: 30, State: release.StateActive}
	dev := func(id, state, errText, rollout string) fleet.Device {
		return fleet.Device{ID: id, Reporting: true, Heartbeat: heartbeat.Heartbeat{Update: &heartbeat.Update{State: state, Error: errText, Rollout: rollout}}}
	}
	tests := []struct {
		name            string
		devs            []fleet.Device
		taken, failures int
		abort           bool
	}{
		{"none", nil, 0, 0, false},
		{"other rollout", []fleet.Device{dev("a", "rolled_back", "", "r0")}, 0, 0, false},
		{"no update field", []fleet.Device{{ID: "a"}}, 0, 0, false},
		{"all committed", []fleet.Device{dev("a", "committed", "", "r1"), dev("b", "committed", "", "r1")}, 2, 0, false},
		{"policy refusals are not taken", []fleet.Device{
			dev("a", "refused", "device not in the rollout: bucket 40.00, rollout at 10 %", "r1"),
			dev("b", "refused", "running version: not a release build: version \"dev\" is not MAJOR.MINOR.PATCH", "r1"),
			dev("c", "refused", "no manifest for this architecture: riscv64", "r1"),
			dev("e", "refused", "offer older than one this device has seen (a replay): issued 2026-12-06T07:00:00Z, the device has seen one of 2026-12-06T07:05:00Z", "r1"),
			dev("d", "committed", "", "r1"),
		}, 1, 0, false},
		{"file refusals are failures", []fleet.Device{
			dev("a", "refused", "sha256 does not match the manifest", "r1"),
			dev("b", "committed", "", "r1"), dev("c", "committed", "", "r1"), dev("d", "downloading", "", "r1"),
		}, 4, 1, false},
		{"rolled back before is a failure", []fleet.Device{
			dev("a", "refused", "version rolled back on this device before: 1.6.0", "r1"),
			dev("b", "rolled_back", "crashed", "r1"), dev("c", "trial", "", "r1"),
		}, 3, 2, true},
		{"at the threshold", []fleet.Device{
			dev("a", "rolled_back", "", "r1"), dev("b", "offered", "", "r1"), dev("c", "installed", "", "r1"),
		}, 3, 1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := fleet.Summarize(o, tt.devs)
			if r.Taken != tt.taken || r.Failures != tt.failures || r.ShouldAbort() != tt.abort {
				t.Fatalf("taken %d failures %d abort %v; want %d %d %v (%+v)", r.Taken, r.Failures, r.ShouldAbort(), tt.taken, tt.failures, tt.abort, r)
			}
		})
	}
	off := *o
	off.AbortPercent = 0
	if r := fleet.Summarize(&off, []fleet.Device{dev("a", "rolled_back", "", "r1")}); r.ShouldAbort() {
		t.Fatal("abort-at 0 aborted")
	}
}
