#!/usr/bin/env bash
# Runs the cross-built dist/edge-agent_linux_{armv6,armv7,arm64} (from
# `make pi`) under qemu-user, each on a CPU model of its Pi: `version`,
# `config check` on the shipped configs, `sensors` with the sim driver, and
# a short `run` against a local mosquitto that must receive readings and a
# clean exit on SIGTERM.
# CI must run it; elsewhere a missing qemu or mosquitto is reported and
# skipped, never silently passed.
set -euo pipefail
cd "$(dirname "$0")/.."

skip_or_fail() {
	if [ "${CI:-}" = true ]; then
		echo "test-qemu: $1, and CI requires it" >&2
		exit 1
	fi
	echo "test-qemu: SKIPPED: $1" >&2
	exit 0
}
qemu_arm=$(command -v qemu-arm-static || command -v qemu-arm || true)
qemu_arm64=$(command -v qemu-aarch64-static || command -v qemu-aarch64 || true)
[ -n "$qemu_arm" ] && [ -n "$qemu_arm64" ] || skip_or_fail "qemu-arm/qemu-aarch64 not installed (apt-get install qemu-user-static)"
mosquitto=$(command -v mosquitto || true)
sub=$(command -v mosquitto_sub || true)

tmp=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT

fail() { echo "test-qemu: FAIL: $*" >&2; exit 1; }

# A broker on a free loopback port, shared by the three runs.
port=""
if [ -n "$mosquitto" ] && [ -n "$sub" ]; then
	for _ in 1 2 3 4 5; do
		p=$((20000 + RANDOM % 40000))
		printf 'listener %d 127.0.0.1\nallow_anonymous true\npersistence false\n' "$p" > "$tmp/mosquitto.conf"
		"$mosquitto" -c "$tmp/mosquitto.conf" > "$tmp/mosquitto.log" 2>&1 &
		mpid=$!
		sleep 0.5
		if kill -0 "$mpid" 2>/dev/null; then port=$p; pids+=("$mpid"); break; fi
	done
	[ -n "$port" ] || fail "mosquitto did not start: $(cat "$tmp/mosquitto.log")"
fi

check_arch() {
	local arch=$1 qemu=$2 cpu=$3
	local bin=dist/edge-agent_linux_$arch dir=$tmp/$arch
	[ -f "$bin" ] || fail "$bin missing (run make pi)"
	mkdir -p "$dir"
	local q=("$qemu" -cpu "$cpu" "$bin")

	"${q[@]}" version > "$dir/version" || fail "$arch: version exited $?"
	grep -q '^edge-agent ' "$dir/version" || fail "$arch: version printed: $(cat "$dir/version")"
	echo "test-qemu: $arch ($cpu): $(cat "$dir/version")"

	# The shipped configs read /etc/edge-agent/confirm-keys.pem, which the
	# install scripts put on a Pi: a test key stands in for it here.
	for c in edge-agent.config.yaml config.example.yaml; do
		sed "s#/etc/edge-agent/confirm-keys.pem#$PWD/agent/config/testdata/confirm-keys.pem#" "systemd/$c" > "$dir/$c"
	done
	"${q[@]}" config check --config "$dir/edge-agent.config.yaml" > /dev/null \
		|| fail "$arch: config check systemd/edge-agent.config.yaml"
	EDGE_AGENT_MQTT_PASSWORD=x "${q[@]}" config check --config "$dir/config.example.yaml" > /dev/null \
		|| fail "$arch: config check systemd/config.example.yaml"
	echo "test-qemu: $arch: config check ok on both shipped configs"

	cat > "$dir/config.yaml" <<-YAML
		device_id: qemu-$arch
		sensors:
		  - {name: sim-1, driver: sim, interval: 200ms}
		  - {name: sim-2, driver: sim, interval: 200ms}
		buffer:
		  path: $dir/buffer.db
		mqtt:
		  url: tcp://127.0.0.1:${port:-1}
		clock:
		  hold_unsynced: 0s  # the host's clock may never report synced
		status_listen: ""
	YAML

	if "${q[@]}" sensors --config "$dir/config.yaml" --json > "$dir/sensors" 2> "$dir/sensors.err"; then
		grep -q 'temperature_c' "$dir/sensors" || fail "$arch: sensors printed no temperature: $(cat "$dir/sensors")"
		echo "test-qemu: $arch: sensors ok"
	else
		fail "$arch: sensors: $(cat "$dir/sensors.err")"
	fi

	[ -n "$port" ] || { skip_note="mosquitto not installed"; return; }
	"$sub" -h 127.0.0.1 -p "$port" -t "sensors/qemu-$arch/+/reading" -C 3 -W 60 > "$dir/got" 2>&1 &
	local spid=$!
	pids+=("$spid")
	"${q[@]}" run --config "$dir/config.yaml" > "$dir/run.log" 2>&1 &
	local apid=$!
	pids+=("$apid")
	# Wait for the subscriber (3 readings or its 60 s timeout) or for the
	# agent to exit, whichever comes first.
	while kill -0 "$spid" 2>/dev/null && kill -0 "$apid" 2>/dev/null; do sleep 0.2; done
	local subrc=0
	if ! kill -0 "$apid" 2>/dev/null; then kill "$spid" 2>/dev/null || true; fi
	wait "$spid" || subrc=$?
	if ! kill -0 "$apid" 2>/dev/null; then
		wait "$apid" || true
		fail "$arch: run exited early: $(tail -20 "$dir/run.log")"
	fi
	[ "$subrc" -eq 0 ] || fail "$arch: no 3 readings within 60 s (mosquitto_sub rc $subrc): $(tail -20 "$dir/run.log")"
	grep -q "\"device_id\":\"qemu-$arch\"" "$dir/got" || fail "$arch: unexpected payloads: $(cat "$dir/got")"
	kill -TERM "$apid"
	local arc=0
	wait "$apid" || arc=$?
	[ "$arc" -eq 0 ] || fail "$arch: run exited $arc after SIGTERM: $(tail -20 "$dir/run.log")"
	echo "test-qemu: $arch: run published $(wc -l < "$dir/got") readings to mosquitto and stopped cleanly"
}

skip_note=""
check_arch armv6 "$qemu_arm" arm1176
check_arch armv7 "$qemu_arm" cortex-a7
check_arch arm64 "$qemu_arm64" cortex-a53
if [ -n "$skip_note" ]; then
	skip_or_fail "run against a broker: $skip_note (apt-get install mosquitto mosquitto-clients)"
fi
echo "test-qemu: ok"
