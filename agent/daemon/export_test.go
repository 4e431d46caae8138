package daemon

import (
	"time"

	"github.com/edgepipe/sensorpipe/agent/mqttpub"
)

// WithAppendFault makes the agent's appends fail with fault's error while
// it returns one, as a full disk does (or block while fault blocks).
func WithAppendFault(o *Options, fault func() error) { o.appendFault = fault }

// WithQueue wraps the buffer the publisher drains.
func WithQueue(o *Options, wrap func(mqttpub.Queue) mqttpub.Queue) { o.wrapQueue = wrap }

// WithWatchdog pets the watchdog every interval, as WATCHDOG_USEC would
// (at half of it), and lets a poll loop be late by slack before it counts
// as stuck.
func WithWatchdog(o *Options, every, slack time.Duration) {
	o.watchdogEvery, o.livenessSlack = every, slack
}

// WithLaunched makes the agent a process the OTA launcher exec'd
// (EDGE_AGENT_LAUNCHED=1).
func WithLaunched(o *Options) { o.launched = true }
