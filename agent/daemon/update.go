package daemon

import (
	"errors"
	"fmt"
	"time"

	"github.com/edgepipe/sensorpipe/agent/config"
	"github.com/edgepipe/sensorpipe/agent/mqttpub"
	"github.com/edgepipe/sensorpipe/agent/update"
	"github.com/edgepipe/sensorpipe/agent/update/release"
	"github.com/edgepipe/sensorpipe/buffer/sign"
)

// setupUpdate creates the over-the-air updater when update.keys_file is
// set (config check made sure fleet.keys_file and fleet.group are too).
func (a *agent) setupUpdate(cfg *config.Config) error {
	uc := cfg.Update
	if uc.KeysFile == "" {
		return nil
	}
	relKeys, err := sign.LoadVerifier(uc.KeysFile)
	if err != nil {
		return &config.Error{Key: "update.keys_file", Msg: err.Error(), Err: err}
	}
	fleetKeys, err := sign.LoadVerifier(cfg.Fleet.KeysFile)
	if err != nil {
		return &config.Error{Key: "fleet.keys_file", Msg: err.Error(), Err: err}
	}
	u, err := update.New(update.Options{
		Dir: cfg.UpdateDir(), DeviceID: cfg.DeviceID, Group: cfg.Fleet.Group, Version: a.o.Version,
		FleetKeys: fleetKeys, ReleaseKeys: relKeys, Deadline: uc.Deadline, MaxSize: int64(uc.MaxSize), CAFile: uc.CAFile,
		Launched: a.o.launched,
		Logger:   a.log.With("component", "update"),
		OnChange: func() {
			if a.rep != nil {
				a.rep.Changed()
			}
		},
	})
	if err != nil {
		return fmt.Errorf("update: %w", err)
	}
	a.upd = u
	if u.Trial() {
		a.log.Info("running an over-the-air version on trial: buffer formats newer than the previous version's are not written until it commits",
			"version", a.o.Version)
	}
	return nil
}

// trial reports whether the running version is on trial. A version on
// trial writes no buffer record format its predecessor might not read
// (docs/BUFFER.md, "Formats and over-the-air updates"): the aggregates of
// buffer.when_full: downsample (format 4) came with over-the-air updates,
// so on trial a full buffer drops instead.
func (a *agent) trial() bool { return a.upd != nil && a.upd.Trial() }

// updateSubscriptions is the group's offer topic; none when updates are off.
func (a *agent) updateSubscriptions() []mqttpub.Subscription {
	if a.upd == nil {
		return nil
	}
	return []mqttpub.Subscription{{Topic: release.OfferTopic(a.cfg.MQTT.TopicPrefix, a.cfg.Fleet.Group), Handle: a.upd.Offer}}
}

// Healthy implements update.Health: what a version on trial must show to
// be committed. MQTT connected, a reading stored since, and with delivery
// kafka a signed confirmation (unsigned ones delete nothing with keys)
// received since.
func (a *agent) Healthy(since time.Time) error {
	pub := a.pub.Load()
	if pub == nil || !pub.Connected() {
		return errors.New("not connected to the MQTT broker")
	}
	if t := a.store.lastOK.Load(); t <= since.UnixNano() {
		if err := a.store.lastErr(); err != nil {
			return fmt.Errorf("no reading stored: %w", err)
		}
		return errors.New("no reading stored yet")
	}
	if a.cfg.MQTT.Delivery == config.DeliveryKafka {
		if d := pub.Delivery(); !d.LastConfirm.After(since) {
			return errors.New("no confirmation from the forwarder yet")
		}
	}
	return nil
}
