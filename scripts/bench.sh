#!/usr/bin/env bash
# make bench: every Go benchmark (buffer, drivers, agent, forwarder) summarised
# with benchstat, the end-to-end throughput and fault runs of scripts/e2e on the
# real binaries, peak RSS (GNU time -v) and binary sizes per target; writes
# docs/PERFORMANCE.md with the figures, the machine and the commands.
#
# Knobs (environment): BENCH_COUNT (default 6), BENCH_PKGS, BENCH_DISTANCE (0 skips
# scripts/bench-distance.sh, whose knobs BENCH_ROUNDS and BENCH_RTTS pass through), E2E_RATES
# (readings/s, default "100 400"), E2E_DURATION (default 30s), E2E_DRAIN (default 30s), E2E_FAULTS
# (1 = also the fault run, default 1), E2E_FLEET (simulated devices for the fleet runs, default 500;
# 0 skips them), E2E_FLEET_DURATION (default 60s), BENCH_SINK_BASE (a git revision: BenchmarkSink
# also runs that revision's sink, interleaved, for an A/B), BENCH_SINK_ROUNDS (default 3),
# BENCH_SINK_DB_RTT (PostgreSQL that far away behind a delaying proxy, e.g. 10ms), OUT
# (default docs/PERFORMANCE.md).
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
COUNT=${BENCH_COUNT:-6} # benchstat needs >= 6 samples for a 95% confidence interval
# cloud/bench and the agent's BenchmarkBacklog are the distance stage's (step 2).
PKGS=${BENCH_PKGS:-$($GO list ./buffer/... ./drivers/... ./agent/... ./cloud/... | grep -v '/cloud/bench$' | tr '\n' ' ')}
DISTANCE=${BENCH_DISTANCE:-1}
RATES=${E2E_RATES:-100 400}
DURATION=${E2E_DURATION:-30s}
DRAIN=${E2E_DRAIN:-30s}
FAULTS=${E2E_FAULTS:-1}
FLEET=${E2E_FLEET:-500}
FLEET_DURATION=${E2E_FLEET_DURATION:-60s}
OUT=${OUT:-docs/PERFORMANCE.md}
BENCHSTAT_PKG=golang.org/x/perf/cmd/benchstat@v0.0.0-20260908200009-22c9c6c9d4da
LOCK=/tmp/bench.lock

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
say() { echo "bench: $*" >&2; }

if [ ! -x /usr/bin/time ]; then
	say "GNU time is missing (apt-get install time): peak RSS will not be measured"
fi

# 1. Go benchmarks, one machine-wide lock so two people's runs never overlap.
bench_cmd="flock $LOCK $GO test -run '^\$' -bench . -skip 'BenchmarkBacklog|BenchmarkFullBufferUnderMemoryMax' -benchmem -count $COUNT ./buffer/... ./drivers/... ./agent/... ./cloud/... (but cloud/bench)"
say "$bench_cmd"
flock "$LOCK" $GO test -run '^$' -bench . -skip 'BenchmarkBacklog|BenchmarkFullBufferUnderMemoryMax' -benchmem -count "$COUNT" $PKGS | tee "$work/bench.txt" >&2
say "benchstat"
(cd "$work" && $GO run "$BENCHSTAT_PKG" bench.txt) >"$work/benchstat.txt"

# 1b. The sink: 100,000 readings from kfake into a local PostgreSQL, on the real binary, in
# rounds beside psql's COPY of the same readings (and another revision's sink, if asked).
sink_env=""
if [ -n "${BENCH_SINK_BASE:-}" ]; then
	mkdir -p "$work/sinkbase"
	git archive "$BENCH_SINK_BASE" | tar -x -C "$work/sinkbase"
	(cd "$work/sinkbase" && CGO_ENABLED=0 $GO build -trimpath -ldflags '-s -w' -o "$work/cloud-forwarder-base" ./cloud/cmd/cloud-forwarder)
	sink_env="BENCH_SINK_BASE_BIN=$work/cloud-forwarder-base"
	sink_shown="BENCH_SINK_BASE_BIN=<cloud-forwarder built at $BENCH_SINK_BASE> "
fi
sink_cmd="${sink_shown:-}BENCH_SINK_ROUNDS=${BENCH_SINK_ROUNDS:-3} flock $LOCK $GO test -run '^\$' -bench BenchmarkSink -benchtime 1x -count 1 ./cloud/bench/"
say "$sink_cmd"
env $sink_env BENCH_SINK_ROUNDS="${BENCH_SINK_ROUNDS:-3}" flock "$LOCK" $GO test -run '^$' -bench BenchmarkSink -benchtime 1x -count 1 ./cloud/bench/ | tee "$work/sink.txt" >&2

# 1c. A full buffer: the default 256 MiB, 4 sensors at 1 Hz, 30 days without a broker on an injected
# clock (downsample mode; about 2 minutes), and the bytes a 0.1 °C deadband saves on the wire.
cov_cmd="flock $LOCK $GO test -run '^\$' -bench Coverage256MiB -benchtime 1x -timeout 30m ./buffer/"
say "$cov_cmd"
flock "$LOCK" $GO test -run '^$' -bench Coverage256MiB -benchtime 1x -timeout 30m ./buffer/ | tee "$work/coverage.txt" >&2
deadband_cmd="$GO test -count 1 -run TestWireSavedByDeadband -v ./agent/deadband/"
say "$deadband_cmd"
$GO test -count 1 -run TestWireSavedByDeadband -v ./agent/deadband/ | tee "$work/deadband.txt" >&2

# 2. Distance: drains and live latency at 0, 20, 50 ms round trip, in rounds.
if [ "$DISTANCE" = 1 ]; then
	scripts/bench-distance.sh >"$work/distance.md"
fi

# 3. Binaries: host build for the e2e runs, and every shipped target for sizes.
make build >&2
sizes="$work/sizes.md"
{
	echo "| binary | target | size (bytes) | size (MiB) |"
	echo "|---|---|---:|---:|"
} >"$sizes"
build_size() { # binary pkg goos goarch goarm label
	local bin=$1 pkg=$2 os=$3 arch=$4 arm=$5 label=$6 out="$work/size-$1-$6"
	CGO_ENABLED=0 GOOS=$os GOARCH=$arch GOARM=$arm $GO build -trimpath -ldflags '-s -w' -o "$out" "$pkg"
	local n
	n=$(stat -c %s "$out")
	awk -v b="$bin" -v l="$label" -v n="$n" 'BEGIN { printf "| %s | %s | %d | %.1f |\n", b, l, n, n / 1048576 }' >>"$sizes"
}
say "binary sizes"
build_size edge-agent ./agent/cmd/edge-agent linux arm 6 linux/arm/v6
build_size edge-agent ./agent/cmd/edge-agent linux arm 7 linux/arm/v7
build_size edge-agent ./agent/cmd/edge-agent linux arm64 "" linux/arm64
build_size edge-agent ./agent/cmd/edge-agent linux amd64 "" linux/amd64
build_size cloud-forwarder ./cloud/cmd/cloud-forwarder linux amd64 "" linux/amd64
build_size cloud-forwarder ./cloud/cmd/cloud-forwarder linux arm64 "" linux/arm64

# 4. End-to-end runs on the real binaries.
e2e_runs=()
for rate in $RATES; do
	cmd="flock $LOCK $GO run ./scripts/e2e -bin bin -faults=false -rate $rate -duration $DURATION -drain $DRAIN"
	say "$cmd"
	flock "$LOCK" $GO run ./scripts/e2e -bin bin -faults=false -rate "$rate" -duration "$DURATION" -drain "$DRAIN" \
		-json "$work/e2e-$rate.json" >"$work/e2e-$rate.txt"
	e2e_runs+=("$cmd|$work/e2e-$rate.txt")
done
if [ "$FAULTS" = 1 ]; then
	cmd="flock $LOCK $GO run ./scripts/e2e -bin bin"
	say "$cmd"
	flock "$LOCK" $GO run ./scripts/e2e -bin bin -json "$work/e2e-faults.json" >"$work/e2e-faults.txt"
	e2e_runs+=("$cmd|$work/e2e-faults.txt")
fi
# 4b. A fleet through one broker and two forwarders, delivery=kafka against
# delivery=broker: broker messages and forwarder CPU per reading.
if [ "$FLEET" -gt 0 ]; then
	for mode in kafka broker; do
		cmd="flock $LOCK $GO run ./scripts/e2e -bin bin -fleet $FLEET -delivery $mode -duration $FLEET_DURATION -warmup 15s"
		say "$cmd"
		flock "$LOCK" $GO run ./scripts/e2e -bin bin -fleet "$FLEET" -delivery "$mode" -duration "$FLEET_DURATION" -warmup 15s \
			-json "$work/fleet-$mode.json" >"$work/fleet-$mode.txt"
		e2e_runs+=("$cmd|$work/fleet-$mode.txt")
	done
fi

# 5. The machine.
cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
cores=$(nproc)
gover=$($GO version)
kernel=$(uname -sr)
mosq=$(mosquitto -h 2>/dev/null | head -1 || true)
rev=$(git describe --tags --always --dirty 2>/dev/null || echo unknown)

mkdir -p "$(dirname "$OUT")"
{
	cat <<EOF
# Performance

Generated by \`make bench\` (scripts/bench.sh) on $(date -u +%Y-%m-%dT%H:%MZ), revision \`$rev\`.
Every figure below is pasted from the command shown next to it; rerun \`make bench\` to reproduce.

## Machine

| | |
|---|---|
| CPU | $cpu |
| cores | $cores |
| Go | $gover |
| kernel | $kernel |
| broker | $mosq |

The machine is shared (other builds may run at the same time): treat the figures as an order of
magnitude, and compare runs with benchstat rather than by eye.

Issue targets and where each stands, with the analysis behind the misses: docs/TARGETS.md
(hand-written, citing the figures below).

EOF
	if [ -s "$work/distance.md" ]; then
		cat "$work/distance.md"
		echo
	fi
	cat <<EOF
## End to end, on the real binaries

\`scripts/e2e\` starts mosquitto (TLS listener, the shipped permission table, persistence), kfake (TLS, SASL PLAIN)
behind a TCP proxy it advertises, the real \`bin/edge-agent\` (sim sensors) behind a second TCP
proxy, two \`bin/cloud-forwarder\` replicas in a share group and, when PostgreSQL is installed,
\`bin/cloud-forwarder sink\` writing the topic into a throwaway cluster; at the end it stops the agent
with SIGTERM, lets the forwarders drain and reads the whole topic back with franz-go \`kgo\` (a consumer of its
own, not the forwarder's client), over TLS + SASL PLAIN, then waits for the sink to have written every reading
and prints the database's count beside Kafka's. It exits 1 if any reading is missing, in Kafka or in
the table, or if the forwarder killed mid-drain (fault 8) sends back more duplicates than its
in-flight window.

The fault run (\`make e2e\`, and CI) injects, one after another, waiting for the pipeline to catch up
in between:

The agent runs with \`mqtt.delivery: kafka\` (it deletes a reading only when a forwarder confirms
Kafka has it) and mosquitto is configured as hosted brokers are: at most 1000 queued messages per
offline or slow session (\`max_queued_messages 1000\`, what HiveMQ and EMQX default to; past it the
broker discards), the shipped permission table (mosquitto's dynamic-security plugin, from
\`cloud-forwarder broker-auth\`'s table: every login bound to its client id) and a 65 KiB packet limit.
The sim sensors take 200 readings/s.

First, **intruders**: logins of the table try what made readings vanish under an ACL file. A
device login subscribes to the forwarders' share group (\`\$share/e2e/sensors/+/+/reading\`); three
more connect with clean session off, subscribe to it and leave (their sessions stay on the broker
for the rest of the run); the device login connects with the agent's and a forwarder's client ids.
Each is refused (SUBACK 0x80, CONNACK not authorised), and for the agent's confirm timeout and
more the forwarders must receive every reading the agent publishes with none re-sent; the run
fails otherwise. (Given forwarder rights instead, the same logins took a quarter of the readings
and the catch-up never came.)

1. **broker-restart**: mosquitto stopped with SIGTERM (it saves its persistence file) and started 3 s
   later, with nothing held back. mosquitto 2.0 does not restore *shared* subscriptions from its
   persistence file, so what the agent publishes before the forwarders re-subscribe is dropped by
   the broker; the agent re-sends those readings when they stay unconfirmed.
2. **silent-cut**: the agent↔broker link black-holed for 20 s: bytes dropped both ways, no FIN or
   RST, new connections hang too. Only the agent's MQTT keepalive (5 s here) can notice.
3. **kafka-outage**: every Kafka connection closed and new ones refused for 60 s (12,000 readings:
   more than the broker queues and the agent's \`max_unconfirmed\` window of 10,000).
4. **forwarders-down**: every forwarder stopped for 60 s; the broker queues 1000 messages per
   forwarder session and discards the rest.
5. **agent-kill-1..3**: \`kill -9\` of the agent three times, the third 0.7 s after a restart while it
   drains a backlog.
6. **forwarder-kill**: \`kill -9\` of one forwarder with unacked MQTT messages in flight, restarted 5 s later.
7. **forwarder-kill-unconfirmed**: \`kill -9\` of a forwarder holding Kafka-acked records it has not
   yet confirmed to the device (it confirms once a second per device).
8. **forwarder-kill-mid-drain**: the crash bound of docs/FORWARDER.md (duplicates at most the
   in-flight window). Every forwarder stopped until the broker queues 2.5 windows per session, then
   started with Kafka 100 ms away (a delaying proxy), and one \`kill -9\`ed when its metrics and the
   topic show the worst moment: \`forwarder_in_flight\` at the window and at least half a window of
   its records in Kafka that it has not yet seen acknowledged; restarted 5 s later. It runs with
   \`FORWARDER_MAX_IN_FLIGHT=200\` (\`-kill-window\`): the shipped default (thousands) cannot fill
   behind a broker that queues 1,000 messages per session and keeps 1,000 in flight. The report splits the
   duplicates the kill caused: those the broker sent again (written, not PUBACKed: the run fails if
   they exceed the window) and those the agent re-sent because their confirmation died with the
   forwarder (delivery=kafka; bounded by the confirmer's batching, not by the window).
9. **full-buffer-restart**: the broker refused for 40 s while the agent buffers, the agent stopped
   (SIGTERM) for 3 s, then started on that backlog with the broker back.

\`make e2e\` then runs faults 1, 3, 4, 7 and 8 once more with \`mqtt.delivery: broker\` and reports,
without failing, how many readings that mode loses; there the agent never re-sends, so every
duplicate of fault 8 is the broker's redelivery, and its bound is checked as in the first run.

What the report's lines mean:

- **produced**: the agent's buffer \`last_seq\` (\`edge-agent buffer stats --json\`) after the clean
  stop; every seq 1..last_seq must be in Kafka, except readings the buffer still holds (reported).
- **latency**: the harness consumer's receive time minus the reading's \`ts\` (same host, same clock),
  for the first copy of each seq: sensor poll → bbolt fsync → MQTT publish (QoS 1) → broker →
  forwarder → Kafka produce (acks=all) → consumer fetch. "calm" leaves out readings taken during a
  fault or its recovery; "all" includes the readings held back by the faults (seconds to minutes).
- **throughput**: readings per second the agent actually took (by reading \`ts\`) and that arrived in
  Kafka, before the drain phase. Equal figures mean the pipeline kept up with what the agent took.
  When "taken" is below the offered rate the sensors' poll loops missed ticks (they skip a missed
  tick rather than queue it), which happens when the host is busy: see the run's "host" load line.
- **drain**: the broker link is refused so a backlog builds in the agent's buffer, then restored.
  The first delay is the agent's reconnect backoff; the rate is readings arriving per second from
  the first arrival until caught up (backlog plus fresh readings).
- **recovery**: time from a fault's end until every reading taken before that moment is in Kafka;
  **resume**: until the first reading taken after the end is in Kafka.
- **dups**: copies of readings already in Kafka that arrived between a fault's start and its
  settling, whatever sent them (agent re-send rounds included); forwarder-kill-mid-drain's lines
  below it split what its kill caused by (device_id, seq) and \`forwarder_id\`.
- **contract**: every record is checked against docs/DESIGN.md's Kafka contract (key = device_id, headers, record time = reading ts).
- **peak RSS**: GNU \`time -v\` maximum resident set size of each program, largest over its restarts.

The calm latency is mostly the forwarder's 5 ms linger (\`KAFKA_BATCH_TIMEOUT\`): docs/FORWARDER.md,
"On a quiet machine, and the window chosen from it", gives it at 0, 1 and 5 ms.

EOF
	if command -v jq >/dev/null && [ -f "$work/e2e-faults.json" ]; then
		echo "### Headline figures"
		echo
		echo "| figure | value | run |"
		echo "|---|---|---|"
		jq -r '"| readings lost | \(.missing) of \(.produced) | fault run |",
			"| duplicates | \(.duplicates) (\(.duplicate_rate * 10000 | round / 100)%) | fault run |",
			"| calm latency p50 / p99 | \(.latency_outside_faults.p50_ms) / \(.latency_outside_faults.p99_ms) ms | fault run, \(.offered_per_s) readings/s |",
			(.faults[] | "| recovery after \(.name) | \(if .complete then "\(.recovery_s * 100 | round / 100) s" else "never" end) | fault run |"),
			(.faults[] | select(.kill_duplicates) | "| duplicates after kill -9 mid-drain | \(.kill_duplicates.redelivered) sent again by the broker, window \(.kill_duplicates.in_flight_window); \(.kill_duplicates.resent) re-sent by the agent (lost confirmations) | fault run |"),
			"| peak RSS edge-agent | \(.peak_rss_kib["edge-agent"] / 1024 * 10 | round / 10) MiB | fault run |",
			"| peak RSS cloud-forwarder run | \([.peak_rss_kib | to_entries[] | select(.key | startswith("e2e-fwd")) | .value] | max / 1024 * 10 | round / 10) MiB | fault run |",
			(if .peak_rss_kib["e2e-sink"] then "| peak RSS cloud-forwarder sink | \(.peak_rss_kib["e2e-sink"] / 1024 * 10 | round / 10) MiB | fault run |" else empty end),
			"| rows in PostgreSQL | \(.db_distinct_readings) of \(.delivered) readings in Kafka | fault run |"' \
			"$work/e2e-faults.json"
		for rate in $RATES; do
			jq -r --arg r "$rate" '"| latency p50 / p99 at \($r)/s | \(.latency_outside_faults.p50_ms) / \(.latency_outside_faults.p99_ms) ms | throughput run \($r)/s |",
				"| taken / delivered at \($r)/s | \(.taken_per_s | round) / \(.delivered_per_s | round) readings/s (host load \(.loadavg_start)) | throughput run \($r)/s |",
				(if .drain then "| drain rate after a \(.drain.drain_s | . * 100 | round / 100) s burst | \(.drain.drain_per_s | round) readings/s (\(.drain.drained) readings; reconnect after \(.drain.resume_s * 100 | round / 100) s) | throughput run \($r)/s |" else empty end)' \
				"$work/e2e-$rate.json"
		done
		echo
	fi
	for entry in "${e2e_runs[@]}"; do
		cmd=${entry%%|*}
		file=${entry#*|}
		echo "\`\`\`"
		echo "\$ $cmd"
		cat "$file"
		echo "\`\`\`"
		echo
	done
	cat <<EOF
## Kafka → PostgreSQL (cloud-forwarder sink)

\`BenchmarkSink\` (cloud/bench) loads 100,000 readings of 100 devices into kfake (TLS, SASL PLAIN, 6
partitions), then runs the real \`bin/cloud-forwarder sink\` against a local PostgreSQL cluster
(scripts/testkit/pgcluster: Debian's server, default settings, fsync on) with a fresh database and consumer
group per run, until every record is committed. \`rows/s\` counts from the process start
(connect, schema migration, group join included); \`rows/s-after-first\` from the first committed
batch; \`peak-RSS-MiB\` is the process's VmHWM. Each round also times \`psql-copy\`: psql's
\`\\copy\` of the same readings (CSV) into the same empty table, one COPY in one session, the database's
own limit without Kafka, duplicate handling or offsets (and \`base-*\`, another revision's sink, when
\`BENCH_SINK_BASE\` is set; \`x-base\` is the ratio). Figures are medians over the rounds, the log
line gives each round's; \`loadavg\` is the machine's load at the end. Targets: at least 50,000
rows/s, under 48 MiB. With \`BENCH_TELEGRAF_BIN\` set, Telegraf runs in the same
rounds (\`telegraf-*\`, \`x-telegraf\`; how to build it, and the A/B: docs/TARGETS.md, "Sink throughput").

\`\`\`
\$ $sink_cmd
EOF
	grep -E '^(goos|goarch|cpu|Benchmark)|rows/s per round' "$work/sink.txt"
	echo "\`\`\`"
	echo
	cat <<EOF
## A full buffer: downsampling instead of dropping, and the deadband

\`BenchmarkDownsample\` (buffer) times one downsampling pass: a buffer filled to \`max_bytes\` with
readings of 4 BME280-like sensors (three fields) gets the append that takes it over, timed to the
end of the pass that append wakes the writer for (log checkpoint, census walk, the oldest half
folded into level-1 aggregates in transactions of 5,000; the append itself returns at once). \`ms/MiB\` is per MiB of live data the pass started from;
\`B/reading\` and \`B/aggregate\` are the stored sizes \`max_bytes\` counts (key, header, sensor
name, payload; a level-1 aggregate stands for 60 readings).

\`\`\`
\$ $bench_cmd
EOF
	grep -E '^BenchmarkDownsample' "$work/bench.txt"
	echo '```'
	echo
	awk '/^BenchmarkDownsample\/live=16MiB/ { for (i = 1; i < NF; i++) if ($(i+1) == "B/reading") b = $i }
		END { if (b) printf "Days a 256 MiB buffer holds at 4 sensors x 1 Hz with `when_full: drop`: 256 MiB / (%.1f B x 4 x 86,400) = **%.2f days**; the first days of a longer outage are lost.\n\n", b, 268435456 / (b * 4 * 86400) }' "$work/bench.txt"
	cat <<EOF
With \`when_full: downsample\` (the default), the same buffer over 30 days (the default \`max_age\`),
simulated on an injected clock through the real buffer (level 0 = readings, level 1 = 1-minute
aggregates, each level doubling the window):

\`\`\`
\$ $cov_cmd
EOF
	grep -E 'readings taken|level [0-9]+:' "$work/coverage.txt" | sed 's/^ *//'
	echo '```'
	echo
	awk '/^BenchmarkDownsample\/live=16MiB/ { for (i = 1; i < NF; i++) if ($(i+1) == "B/aggregate") a = $i }
		END { if (a) printf "Without `max_age`, 1-minute aggregates alone (%.1f B per sensor and minute) would fill it in %.0f days; a buffer wholly at level L holds 2^(L-1) times as long, at the coarsest (512-minute windows) %.0f years: `max_age`, not `max_bytes`, bounds a downsampling buffer.\n\n", a, 268435456 / (a * 4 * 1440), 268435456 / (a * 4 * 1440 / 512) / 365 }' "$work/bench.txt"
	cat <<EOF
Bytes on the wire a 0.1 °C deadband saves (a **simulated** greenhouse day: no recorded trace is in
the repository; docs/AGENT.md, "Deadband", describes the trace and the byte count):

\`\`\`
\$ $deadband_cmd
EOF
	grep -E 'saved' "$work/deadband.txt" | sed 's/^ *//'
	echo '```'
	echo
	cat <<EOF
## Binary sizes

Stripped (\`-trimpath -ldflags '-s -w'\`), \`CGO_ENABLED=0\`, as \`make build\`, \`make pi\` and the image build them.

EOF
	cat "$sizes"
	cat <<EOF

## Go benchmarks

\`\`\`
\$ $bench_cmd > bench.txt
\$ go run $BENCHSTAT_PKG bench.txt
EOF
	cat "$work/benchstat.txt"
	echo "\`\`\`"
} >"$OUT"
say "wrote $OUT"
