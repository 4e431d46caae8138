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
# Not part of `make test`: it downloads a Debian base (~40 s). The tree is
# cached in $NSPAWN_CACHE (default /var/cache/sensorpipe/nspawn-bookworm).
set -euo pipefail
cd "$(dirname "$0")/.."
skip() { echo "test-systemd: SKIPPED: $*" >&2; exit 0; }
fail() { echo "test-systemd: FAIL: $*" >&2; exit 1; }
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
# Boot a throwaway copy so the cache stays clean.
root=$work/root
cp -a "$cache" "$root"
rm -f "$root/etc/machine-id"

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
mosquitto_sub -h 127.0.0.1 -p "$port" -t 'sensors/nspawn-pi/+/reading' -C 5 -W 120 > "$work/readings" 2>&1 &
subpid=$!
pids+=("$subpid")

cp "$deb" "$root/root/edge-agent.deb"
chroot "$root" dpkg -i /root/edge-agent.deb > "$work/dpkg.log" 2>&1 || fail "dpkg -i: $(cat "$work/dpkg.log")"
cat > "$root/etc/edge-agent/config.yaml" <<YAML
device_id: nspawn-pi
sensors:
  - {name: sim-1, driver: sim, interval: 500ms}
mqtt:
  url: tcp://127.0.0.1:$port
status_listen: ""
YAML
cat > "$root/root/report.sh" <<'SH'
#!/bin/sh
# Waits for edge-agent to settle, exercises reload and stop, writes what
# systemd says to /root/report.txt, powers the container off.
for _ in $(seq 1 30); do
	[ "$(systemctl show -p SubState --value edge-agent)" = running ] && break
	sleep 1
done
sleep 5
{
	systemctl show edge-agent -p ActiveState,SubState,NRestarts,Result,Type,WatchdogUSec
	echo "Groups=$(id -nG edge-agent)"
	pid=$(systemctl show -p MainPID --value edge-agent)
	echo "ProcUser=$(ps -o user= -p "$pid")"
	systemctl reload edge-agent && echo "Reload=ok" || echo "Reload=failed"
	sleep 2
	echo "AfterReload=$(systemctl show -p SubState --value edge-agent)"
	systemctl stop edge-agent
	echo "StopResult=$(systemctl show -p Result --value edge-agent)"
	echo "== journal"
	journalctl -u edge-agent --no-pager -o cat | tail -20
} > /root/report.txt 2>&1
systemctl poweroff
SH
chmod +x "$root/root/report.sh"
cat > "$root/etc/systemd/system/report.service" <<'UNIT'
[Unit]
After=edge-agent.service
[Service]
Type=oneshot
ExecStart=/root/report.sh
[Install]
WantedBy=multi-user.target
UNIT
ln -sf /etc/systemd/system/report.service "$root/etc/systemd/system/multi-user.target.wants/report.service"

echo "test-systemd: booting the tree with systemd-nspawn"
timeout 180 systemd-nspawn --register=no --keep-unit -q -D "$root" --boot > "$work/boot.log" 2>&1 \
	|| fail "nspawn: $(tail -20 "$work/boot.log")"
[ -f "$root/root/report.txt" ] || fail "no report from inside the container: $(tail -20 "$work/boot.log")"
report=$(cat "$root/root/report.txt")
echo "$report" | sed 's/^/  /'
want() { grep -qx "$1" <<<"$report" || fail "want $1"; }
want ActiveState=active
want SubState=running
want NRestarts=0
want Type=notify
want WatchdogUSec=30s
want ProcUser=edge-agent
want Reload=ok
want AfterReload=running
want StopResult=success
grep -q '^Groups=.*\bi2c\b' <<<"$report" && grep -q '^Groups=.*\bgpio\b' <<<"$report" || fail "edge-agent not in i2c and gpio"
wait "$subpid" || fail "fewer than 5 readings reached the host broker: $(cat "$work/readings")"
grep -q '"device_id":"nspawn-pi"' "$work/readings" || fail "unexpected payloads: $(cat "$work/readings")"
echo "test-systemd: ok: the .deb's unit runs under systemd 252 as PID 1; $(wc -l < "$work/readings") readings reached the host broker"
