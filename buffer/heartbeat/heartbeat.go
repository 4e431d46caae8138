// Package heartbeat is a device's retained status message: what the cloud
// can see of a Pi's health without logging into it.
//
// The agent publishes it on {prefix}/{device_id}/status, QoS 1, retained:
// at connect ("online"), on every change worth telling, every
// status_interval (60 s by default), on a clean stop ("offline"), and as
// its last will (a short "offline"). The forwarder and a monitoring login
// read it; the forwarder may relay it to Kafka, where a consumer decodes it
// with Decode.
//
//	{"v":2,"state":"online","ts":1764988800,"agent":"1.4.0","delivery":"kafka",
//	 "config":{"version":"9f2c4e1ab3d0","source":"file"},"boot":1764900000,"uptime":86400,
//	 "clock":{"synced":true,"step":-259200.125},
//	 "buffer":{"readings":12,"bytes":3120,"oldest_age":4,"unconfirmed":12,"unconfirmed_age":3,
//	   "last_confirm":1764988799,"drops":{"max_bytes":310},"damaged":1,"disk_free":5123456789},
//	 "host":{"temp_c":48.3,"throttle":{"now":["under_voltage"],"since_boot":["under_voltage"]}},
//	 "sensors":{"bme280-0x76":{"state":"ok","last_good":1764988795},
//	   "ds18b20-1":{"state":"failing","fails":4,"err_class":"crc","err":"...","err_at":1764988790}}}
//
// Times are Unix seconds, ages and durations seconds; a field that is
// absent is zero, empty or unknown (there is no CPU temperature on a
// machine without a thermal zone, no "throttle" where the kernel does not
// expose the Raspberry Pi firmware's flags). Every field but "v" and
// "state" may be absent: the last will carries only the fields fixed at
// connect. Version 1 (before heartbeats: state, delivery, unconfirmed, ts
// as RFC 3339, sensors) is still decoded, into the same struct.
//
// The package holds the format only; agent/status builds the message and
// decides when it is due.
package heartbeat

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Version is the format version written in the "v" field.
const Version = 2

// MaxPayload is the largest message Decode accepts, in bytes. A heartbeat
// is well under 2 KiB with a dozen sensors.
const MaxPayload = 64 << 10

// ErrInvalid is wrapped by every error Decode returns.
var ErrInvalid = errors.New("invalid heartbeat")

// States of a device.
const (
	Online  = "online"
	Offline = "offline"
)

// Topic is the retained topic of a device's heartbeat.
func Topic(prefix, deviceID string) string {
	return prefix + "/" + deviceID + "/status"
}

// Heartbeat is one status message.
type Heartbeat struct {
	V     int    `json:"v"`
	State string `json:"state"` // Online or Offline
	// TS is when the agent built the message, by its clock (Unix seconds;
	// not trustworthy while Clock.Synced is false).
	TS int64 `json:"ts,omitempty"`
	// Agent is the agent's version (edge-agent version).
	Agent string `json:"agent,omitempty"`
	// Delivery is when a reading leaves the buffer: "kafka" (at the
	// forwarder's confirmation) or "broker" (at PUBACK).
	Delivery string  `json:"delivery,omitempty"`
	Config   *Config `json:"config,omitempty"`
	// Boot is when the machine booted (Unix seconds, by the agent's clock);
	// Uptime is how long the agent process has run, in seconds.
	Boot   int64 `json:"boot,omitempty"`
	Uptime int64 `json:"uptime,omitempty"`
	// StatusInterval is the agent's status_interval in seconds: the next
	// heartbeat comes at the latest this long after this one, so the cloud
	// can tell a device that stopped reporting (three intervals of silence).
	StatusInterval int64 `json:"status_interval,omitempty"`
	// ConfirmUnsigned is true while the agent accepts confirmations that
	// are not signed (an old config without confirmation keys).
	ConfirmUnsigned bool              `json:"confirm_unsigned,omitempty"`
	Clock           *Clock            `json:"clock,omitempty"`
	Buffer          *Buffer           `json:"buffer,omitempty"`
	Host            *Host             `json:"host,omitempty"`
	Sensors         map[string]Sensor `json:"sensors,omitempty"`
	// Update is the state of the last over-the-air update offered to the
	// device; absent when none was.
	Update *Update `json:"update,omitempty"`
}

// Update stages, in the order an update that goes well passes them.
const (
	UpdateOffered     = "offered"     // an offer applies to this device
	UpdateDownloading = "downloading" // the file is being fetched
	UpdateVerified    = "verified"    // size, sha256 and signature checked
	UpdateInstalled   = "installed"   // staged and swapped in; restarting into it
	UpdateTrial       = "trial"       // the new version runs and must prove itself healthy
	UpdateCommitted   = "committed"   // it proved itself: kept
	UpdateRolledBack  = "rolled_back" // it failed: the previous version is back
	UpdateRefused     = "refused"     // the offer or the file was refused; Error says why
)

// Update reports an over-the-air update (agent/update).
type Update struct {
	State   string `json:"state"`             // one of the Update* stages
	Version string `json:"version,omitempty"` // the version offered
	From    string `json:"from,omitempty"`    // the version it replaces
	Rollout string `json:"rollout,omitempty"` // the offer's rollout id
	Error   string `json:"error,omitempty"`   // why it was refused or rolled back
	At      int64  `json:"at,omitempty"`      // when it reached State, Unix seconds
}

// Config is the configuration in force.
type Config struct {
	// Version names the config: for a file, the first 12 hex digits of
	// the SHA-256 of its bytes.
	Version string `json:"version,omitempty"`
	// Source is where it came from: "file" or "remote" (fleet config
	// documents; Version is then "fleet.group.device").
	Source string `json:"source,omitempty"`
	// State is the remote config's state when remote config is on: "ok",
	// "trial" (applied, within its grace period), "refused" or
	// "rolled_back".
	State string `json:"state,omitempty"`
	// Error is why the last document was refused or rolled back.
	Error string `json:"error,omitempty"`
}

// Clock is what the agent knows of its clock.
type Clock struct {
	// Synced is true once the kernel reported the clock set by NTP.
	Synced bool `json:"synced"`
	// Step is how far the sync moved the agent's timeline, in seconds
	// (positive: the clock was behind); 0 before the sync.
	Step float64 `json:"step,omitempty"`
}

// Buffer is the state of the device's store-and-forward buffer.
type Buffer struct {
	Readings uint64 `json:"readings"`
	Bytes    int64  `json:"bytes"` // live bytes, bounded by buffer.max_bytes
	// OldestAge is the age of the oldest buffered reading by its
	// timestamp, in seconds.
	OldestAge int64 `json:"oldest_age,omitempty"`
	// Held counts readings held back until the clock syncs (or the hold,
	// clock.hold_unsynced, ends) so that their time can be corrected.
	Held uint64 `json:"held,omitempty"`
	// Unconfirmed counts readings published and not yet confirmed by a
	// forwarder (delivery kafka); UnconfirmedAge is how long ago the
	// oldest of them was first published, in seconds.
	Unconfirmed    uint64 `json:"unconfirmed,omitempty"`
	UnconfirmedAge int64  `json:"unconfirmed_age,omitempty"`
	// LastConfirm is when a confirmation last deleted readings (Unix
	// seconds); absent if none since the agent started.
	LastConfirm int64 `json:"last_confirm,omitempty"`
	// Drops counts readings the buffer threw away, ever, by reason
	// ("max_bytes", "max_age"); a reason that never dropped is absent.
	Drops map[string]uint64 `json:"drops,omitempty"`
	// Damaged counts records that failed their checksum and were moved
	// aside unpublished, ever.
	Damaged uint64 `json:"damaged,omitempty"`
	// Folded counts readings a full buffer folded into aggregates
	// (buffer.when_full: downsample), ever: not lost, sent at a coarser
	// resolution. Drops by max_bytes then count readings lost past the
	// coarsest level.
	Folded uint64 `json:"folded,omitempty"`
	// DiskFree is the space left to unprivileged users on the buffer's
	// file system, in bytes.
	DiskFree int64 `json:"disk_free,omitempty"`
}

// Drop reasons.
const (
	DropMaxBytes = "max_bytes"
	DropMaxAge   = "max_age"
)

// Host is the machine's own health, where the kernel tells it.
type Host struct {
	// TempC is the CPU temperature in degrees Celsius; absent without a
	// thermal zone.
	TempC *float64 `json:"temp_c,omitempty"`
	// Throttle is the Raspberry Pi firmware's power and thermal flags;
	// absent where the kernel does not expose them, {} when all is well.
	Throttle *Throttle `json:"throttle,omitempty"`
}

// Throttle flags, as the Raspberry Pi firmware reports them.
const (
	UnderVoltage  = "under_voltage"
	FreqCapped    = "freq_capped"
	Throttled     = "throttled"
	SoftTempLimit = "soft_temp_limit"
)

// Throttle lists the flags set now and those set at some time since boot.
type Throttle struct {
	Now       []string `json:"now,omitempty"`
	SinceBoot []string `json:"since_boot,omitempty"`
}

// Sensor is one sensor's health.
type Sensor struct {
	State string `json:"state"` // "ok", "failing" or "unknown" (not read yet)
	// Fails counts failed opens and reads since the last good read.
	Fails    int   `json:"fails,omitempty"`
	LastGood int64 `json:"last_good,omitempty"` // Unix seconds
	// ErrClass is the class of the last failure (absent, crc, timeout,
	// out_of_range, power_on, other), kept after a recovery.
	ErrClass string `json:"err_class,omitempty"`
	// Err is the last failure's message, only while the sensor fails.
	Err   string `json:"err,omitempty"`
	ErrAt int64  `json:"err_at,omitempty"` // Unix seconds
	// Suppressed counts good readings the sensor's deadband did not store
	// since the agent started (they take no seq).
	Suppressed uint64 `json:"suppressed,omitempty"`
}

// Encode returns h's wire form with V set to Version.
func Encode(h *Heartbeat) []byte {
	c := *h
	c.V = Version
	b, _ := json.Marshal(&c) // plain fields: cannot fail
	return b
}

// Unix is t in Unix seconds, 0 for the zero time.
func Unix(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.Unix()
}

// v1 is the status message before heartbeats.
type v1 struct {
	State       string    `json:"state"`
	Delivery    string    `json:"delivery"`
	Unconfirmed *uint64   `json:"unconfirmed"`
	TS          time.Time `json:"ts"`
	Sensors     map[string]struct {
		State               string    `json:"state"`
		ConsecutiveFailures int       `json:"consecutive_failures"`
		LastGood            time.Time `json:"last_good"`
		LastErrorClass      string    `json:"last_error_class"`
		LastError           string    `json:"last_error"`
		LastErrorAt         time.Time `json:"last_error_at"`
	} `json:"sensors"`
}

// Decode parses a status message of version 1 or 2. Unknown fields are
// ignored, so a newer agent may add some.
func Decode(b []byte) (Heartbeat, error) {
	if len(b) > MaxPayload {
		return Heartbeat{}, fmt.Errorf("%w: %d bytes, more than %d", ErrInvalid, len(b), MaxPayload)
	}
	var probe struct {
		V *int `json:"v"`
	}
	if err := json.Unmarshal(b, &probe); err != nil {
		return Heartbeat{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	var h Heartbeat
	switch {
	case probe.V == nil:
		return Heartbeat{}, fmt.Errorf("%w: no \"v\"", ErrInvalid)
	case *probe.V == 1:
		var o v1
		if err := json.Unmarshal(b, &o); err != nil {
			return Heartbeat{}, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		h = fromV1(&o)
	case *probe.V == Version:
		d := json.NewDecoder(bytes.NewReader(b))
		if err := d.Decode(&h); err != nil {
			return Heartbeat{}, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		if d.More() {
			return Heartbeat{}, fmt.Errorf("%w: data after the JSON object", ErrInvalid)
		}
	default:
		return Heartbeat{}, fmt.Errorf("%w: version %d, want 1 or %d", ErrInvalid, *probe.V, Version)
	}
	if h.State != Online && h.State != Offline {
		return Heartbeat{}, fmt.Errorf("%w: state %q is not %q or %q", ErrInvalid, h.State, Online, Offline)
	}
	return h, nil
}

func fromV1(o *v1) Heartbeat {
	h := Heartbeat{V: 1, State: o.State, Delivery: o.Delivery, TS: Unix(o.TS)}
	if o.Unconfirmed != nil {
		h.Buffer = &Buffer{Unconfirmed: *o.Unconfirmed}
	}
	if len(o.Sensors) > 0 {
		h.Sensors = make(map[string]Sensor, len(o.Sensors))
		for name, s := range o.Sensors {
			h.Sensors[name] = Sensor{State: s.State, Fails: s.ConsecutiveFailures, LastGood: Unix(s.LastGood),
				ErrClass: s.LastErrorClass, Err: s.LastError, ErrAt: Unix(s.LastErrorAt)}
		}
	}
	return h
}
