package daemon

import (
	"path/filepath"
	"time"

	"github.com/edgepipe/sensorpipe/agent/config"
	"github.com/edgepipe/sensorpipe/agent/mqttpub"
	"github.com/edgepipe/sensorpipe/agent/status"
	"github.com/edgepipe/sensorpipe/buffer/heartbeat"
)

// configSourceFile is the heartbeat's config source for a config read from
// the local file.
const configSourceFile = "file"

// reporter builds the heartbeat's reporter over the agent's parts. pub
// returns the publisher, which exists by the time the reporter is asked.
func (a *agent) reporter(pub func() *mqttpub.Publisher) *status.Reporter {
	cfg := a.cfg
	src := status.Sources{
		Agent:     a.o.Version,
		Delivery:  cfg.MQTT.Delivery,
		Config:    a.configReport,
		Buffer:    a.buf.Stats,
		BufferDir: filepath.Dir(cfg.Buffer.Path),
		Clock: func() status.Clock {
			return status.Clock{Synced: a.clk.Synced(), Step: a.clk.Offset(), Boot: a.clk.BootTime()}
		},
		Health:    &a.health,
		SysfsRoot: cfg.SysfsRoot,
	}
	if a.upd != nil {
		src.Update = a.upd.Report
	}
	if cfg.MQTT.Delivery == config.DeliveryKafka {
		src.Unconfirmed = func() status.Unconfirmed {
			d := pub().Delivery()
			return status.Unconfirmed{N: d.Unconfirmed, Oldest: d.OldestUnconfirmed, LastConfirm: d.LastConfirm}
		}
		src.ConfirmUnsigned = cfg.AcceptsUnsigned // no mqtt.confirm_keys_file
	}
	return status.NewReporter(src, status.ReporterOptions{Interval: cfg.StatusInterval, Logger: a.log.With("component", "status")})
}

// configReport is the heartbeat's config: the local file's version, or
// the remote documents' in force, with the remote config's state.
func (a *agent) configReport() heartbeat.Config {
	c := *a.cfgInUse.Load()
	if r, ok := a.FleetReport(); ok {
		if r.Source == "remote" {
			c.Version, c.Source = r.Version, r.Source
		}
		c.State, c.Error = r.State, r.Error
	}
	return c
}

// holdLog is what the agent said about readings held for the clock
// (clock.hold_unsynced), so that each is said once a run. Only the clock
// loop touches it.
type holdLog struct {
	started bool
	ends    time.Time // when the first held reading is let go unsynced
	ended   bool
}

// noteHold says, once, that readings are held for the clock with their
// count and when the hold of the first ends, and once more if that time
// comes with the clock still unsynced: without it a Pi without NTP looks
// dead for clock.hold_unsynced.
func (a *agent) noteHold() {
	hold := a.cfg.Clock.HoldUnsynced
	if hold <= 0 || a.clk.Synced() || a.holdLog.ended {
		return
	}
	now := time.Now()
	if !a.holdLog.started {
		n, rest, err := a.buf.CountHeld(a.clk.Held)
		if err != nil || n == 0 {
			return
		}
		a.holdLog.started, a.holdLog.ends = true, now.Add(rest)
		a.log.Warn("the clock is not synced (no NTP yet): readings are held back so that their time can be corrected when it syncs; "+
			"they are published then, or each clock.hold_unsynced after it was taken, as it is (time_synced=false)",
			"held", n, "hold_ends", a.holdLog.ends.UTC().Format(time.RFC3339), "hold_unsynced", hold.String())
		return
	}
	if !now.Before(a.holdLog.ends) {
		a.holdLog.ended = true
		a.log.Warn("the clock is still not synced after clock.hold_unsynced: publishing readings as they are (time_synced=false), "+
			"each clock.hold_unsynced after it was taken; check NTP (timedatectl timesync-status)", "hold_unsynced", hold.String())
	}
}
