#!/usr/bin/env bash
# Boots a minimal Debian bookworm tree under systemd-nspawn (systemd 252 as
# PID 1, the host's network), installs dist/edge-agent_*_amd64.deb in it
# with dpkg, points the agent at a mosquitto on the host, and checks that
# the hardened unit really runs: Type=notify reaches active/running, no
# restarts, the process has the edge-agent user and the i2c/gpio groups,
# readings arrive at the broker, `systemctl reload` works, `systemctl stop`
# ends with Result=success.
#
#   make test-systemd        (needs root, debootstrap, systemd-container,
#                             mosquitto, mosquitto-clients, and a Debian mirror)
#
# It does the same for a tree prepared offline by scripts/flash-sd.sh, where
# the user is created at first boot from sysusers.d, and then runs the
# over-the-air update paths of docs/UPDATE.md in a third tree (part 3).
# Not part of `make test`: it downloads a Debian base (~40 s). The tree is
# cached in $NSPAWN_CACHE (default /var/cache/sensorpipe/nspawn-bookworm);
# each boot uses a throwaway copy.
set -euo pipefail
cd "$(dirname "$0")/.."
fail() { echo "test-systemd: FAIL: $*" >&2; exit 1; }
# Outside CI a missing tool skips, saying why; in CI (.ci/run installs them) it fails.
skip() {
	[ "${CI:-}" != true ] || fail "$* (CI=true: not skipping)"
	echo "test-systemd: SKIPPED: $*" >&2
	exit 0
}
[ "$(id -u)" -eq 0 ] || skip "needs root (debootstrap, systemd-nspawn)"
for t in debootstrap systemd-nspawn mosquitto mosquitto_sub; do
	command -v "$t" >/dev/null || skip "$t not installed (apt-get install debootstrap systemd-container mosquitto mosquitto-clients)"
done
[ "$(go env GOARCH)" = amd64 ] || skip "the tree and package are amd64"
deb=$(ls -t dist/edge-agent_*_amd64.deb 2>/dev/null | head -1)
[ -n "$deb" ] || fail "no dist/edge-agent_*_amd64.deb (run make deb)"

cache=${NSPAWN_CACHE:-/var/cache/sensorpipe/nspawn-bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
if [ ! -x "$cache/lib/systemd/systemd" ]; then
	echo "test-systemd: debootstrap bookworm into $cache"
	rm -rf "$cache" && mkdir -p "$(dirname "$cache")"
	debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,procps,passwd \
		bookworm "$cache.tmp" "$mirror" > /tmp/test-systemd-debootstrap.log 2>&1 \
		|| fail "debootstrap failed: $(tail -5 /tmp/test-systemd-debootstrap.log)"
	mv "$cache.tmp" "$cache"
fi

work=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

port=""
for _ in 1 2 3 4 5; do
	p=$((20000 + RANDOM % 40000))
	printf 'listener %d 127.0.0.1\nallow_anonymous true\npersistence false\n' "$p" > "$work/mosquitto.conf"
	mosquitto -c "$work/mosquitto.conf" > "$work/mosquitto.log" 2>&1 &
	mpid=$!
	sleep 0.5
	if kill -0 "$mpid" 2>/dev/null; then port=$p; pids+=("$mpid"); break; fi
done
[ -n "$port" ] || fail "mosquitto did not start"
# boot_check ROOT DEVICE LABEL: boots ROOT (the agent installed, its config
# naming DEVICE) and checks the unit and the readings.
boot_check() {
	local root=$1 device=$2 label=$3
	mosquitto_sub -h 127.0.0.1 -p "$port" -t "sensors/$device/+/reading" -C 5 -W 120 > "$work/readings-$device" 2>&1 &
	local subpid=$!
	pids+=("$subpid")
	cat > "$root/etc/edge-agent/config.yaml" <<-YAML
		device_id: $device
		sensors:
		  - {name: sim-1, driver: sim, interval: 500ms}
		mqtt:
		  url: tcp://127.0.0.1:$port
		clock:
		  hold_unsynced: 0s  # the container's clock may never report synced
		status_listen: ""
	YAML
	cp scripts/testdata/nspawn-report.sh "$root/root/report.sh"
	chmod +x "$root/root/report.sh"
	cat > "$root/etc/systemd/system/report.service" <<-'UNIT'
		[Unit]
		After=edge-agent.service
		[Service]
		Type=oneshot
		ExecStart=/root/report.sh
		[Install]
		WantedBy=multi-user.target
	UNIT
	ln -sf /etc/systemd/system/report.service "$root/etc/systemd/system/multi-user.target.wants/report.service"

	echo "test-systemd: $label: booting with systemd-nspawn"
	timeout 180 systemd-nspawn --register=no --keep-unit -q -D "$root" --boot > "$work/boot-$device.log" 2>&1 \
		|| fail "$label: nspawn: $(tail -20 "$work/boot-$device.log")"
	[ -f "$root/root/report.txt" ] || fail "$label: no report from inside the container: $(tail -20 "$work/boot-$device.log")"
	local report
	report=$(cat "$root/root/report.txt")
	echo "$report" | sed 's/^/  /'
	for w in ActiveState=active SubState=running NRestarts=0 Type=notify WatchdogUSec=30s ProcUser=edge-agent \
		Reload=ok AfterReload=running StopResult=success; do
		grep -qx "$w" <<<"$report" || fail "$label: want $w"
	done
	grep -q '^Groups=.*\bi2c\b' <<<"$report" && grep -q '^Groups=.*\bgpio\b' <<<"$report" \
		|| fail "$label: edge-agent not in i2c and gpio"
	wait "$subpid" || fail "$label: fewer than 5 readings reached the host broker: $(cat "$work/readings-$device")"
	grep -q "\"device_id\":\"$device\"" "$work/readings-$device" || fail "$label: unexpected payloads"
	echo "test-systemd: $label: ok: $(wc -l < "$work/readings-$device") readings reached the host broker"
}

# 1. The .deb, installed with dpkg.
root=$work/deb
cp -a "$cache" "$root"
rm -f "$root/etc/machine-id"
cp "$deb" "$root/root/edge-agent.deb"
chroot "$root" dpkg -i /root/edge-agent.deb > "$work/dpkg.log" 2>&1 || fail "dpkg -i: $(cat "$work/dpkg.log")"
boot_check "$root" nspawn-deb ".deb"

# 2. scripts/flash-sd.sh on the offline tree: the user comes from sysusers.d
# at first boot (edge-agent-sysusers.service), not from a package script.
root=$work/flash
cp -a "$cache" "$root"
rm -f "$root/etc/machine-id"
mkdir -p "$work/bootfs" && printf '# config.txt\n[all]\n' > "$work/bootfs/config.txt"
ARCH=amd64 scripts/flash-sd.sh "$root" "$work/bootfs" > "$work/flash.log" 2>&1 || fail "flash-sd.sh: $(cat "$work/flash.log")"
! chroot "$root" getent passwd edge-agent >/dev/null || fail "flash-sd.sh created the user offline; it should at boot"
boot_check "$root" nspawn-flash "flash-sd.sh"
echo "test-systemd: ok: the unit runs under systemd 252 as PID 1, from the .deb and from flash-sd.sh"

# 3. Over-the-air updates (docs/UPDATE.md) under the real units: 1.0.0 from
# its .deb; refusals (bad signature, wrong hash, truncated, downgrade, full
# disk) with 1.0.0 left running; 1.1.0 over the air, committed; a 1.2.0
# that crashes at start and a 1.3.0 that never gets healthy, both rolled
# back to 1.1.0; the 2.0.0 .deb installed over the running agent; every
# reading counted by seq. scripts/systemdota drives it from inside the
# container and writes the report. The state directory is a 96 MiB tmpfs,
# so that the full disk is real without filling the host's.
ota=$work/ota-build
mkdir -p "$ota"
gobuild() { CGO_ENABLED=0 GOOS=linux GOARCH=amd64 go build -trimpath -ldflags "-s -w $2" -o "$ota/$1" "$3"; }
gobuild edge-agent-1.0.0 "-X main.version=1.0.0" ./agent/cmd/edge-agent
gobuild edge-agent-1.1.0 "-X main.version=1.1.0" ./agent/cmd/edge-agent
gobuild edge-agent-2.0.0 "-X main.version=2.0.0" ./agent/cmd/edge-agent
gobuild crashing "" ./scripts/systemdota/testdata/crashing
gobuild unhealthy "" ./scripts/systemdota/testdata/unhealthy
gobuild systemdota "" ./scripts/systemdota
for v in 1.0.0 2.0.0; do
	go run ./scripts/mkdeb -version "$v" -out "$ota" amd64="$ota/edge-agent-$v" > /dev/null || fail "mkdeb $v"
done
root=$work/ota
cp -a "$cache" "$root"
rm -f "$root/etc/machine-id"
cp "$ota/edge-agent_1.0.0_amd64.deb" "$root/root/edge-agent.deb"
chroot "$root" dpkg -i /root/edge-agent.deb > "$work/dpkg-ota.log" 2>&1 || fail "dpkg -i 1.0.0: $(cat "$work/dpkg-ota.log")"
mkdir -p "$root/root/ota"
cp "$ota"/{edge-agent-1.1.0,crashing,unhealthy,systemdota,edge-agent_2.0.0_amd64.deb} "$root/root/ota/"
cat > "$root/etc/edge-agent/config.yaml" <<-YAML
	device_id: nspawn-ota
	sensors:
	  - {name: sim-1, driver: sim, interval: 200ms}
	mqtt: {url: "tcp://127.0.0.1:$port", delivery: broker}
	clock: {hold_unsynced: 0s}
	status_listen: ""
YAML
cat > "$root/etc/systemd/system/ota.service" <<-UNIT
	[Unit]
	After=edge-agent.service
	[Service]
	Type=oneshot
	TimeoutStartSec=15min
	ExecStart=/root/ota/systemdota -port $port -dir /root/ota
	[Install]
	WantedBy=multi-user.target
UNIT
ln -sf /etc/systemd/system/ota.service "$root/etc/systemd/system/multi-user.target.wants/ota.service"
echo "test-systemd: over the air: booting with systemd-nspawn"
start=$(date +%s)
timeout 900 systemd-nspawn --register=no --keep-unit -q -D "$root" --tmpfs=/var/lib/edge-agent:size=96M,mode=0755 --boot \
	> "$work/boot-ota.log" 2>&1 || fail "over the air: nspawn: $(tail -20 "$work/boot-ota.log")"
[ -f "$root/root/ota/report.txt" ] || fail "over the air: no report: $(tail -20 "$work/boot-ota.log")"
sed 's/^/  /' "$root/root/ota/report.txt"
grep -q '^OTA-OK' "$root/root/ota/report.txt" || fail "over the air (report above)"
echo "test-systemd: ok: over-the-air updates under systemd in $(($(date +%s) - start)) s"
