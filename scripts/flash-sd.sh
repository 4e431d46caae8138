#!/usr/bin/env bash
# Installs edge-agent onto a mounted Raspberry Pi OS SD card, offline:
#   make pi && sudo scripts/flash-sd.sh /media/$USER/rootfs /media/$USER/bootfs
# ROOTFS is the card's root partition; BOOT its boot partition (FAT, holds
# config.txt), by default ROOTFS/boot/firmware (Bookworm) or ROOTFS/boot.
# It writes:
#   ROOTFS/usr/local/bin/edge-agent (armv6 for a 32-bit OS, arm64 for 64-bit;
#     ARCH=armv7 overrides), the unit in ROOTFS/etc/systemd/system enabled
#     by symlink, ROOTFS/etc/edge-agent/config.yaml unless one exists,
#   ROOTFS/usr/lib/sysusers.d/edge-agent.conf and a oneshot unit that
#     creates the edge-agent user (groups i2c, gpio) at boot before the agent,
#   ROOTFS/etc/modules-load.d/edge-agent.conf (i2c-dev),
#   ROOTFS/etc/edge-agent/confirm-keys.pem from CONFIRM_KEYS=FILE (the
#     forwarders' public keys, openssl pkey -pubout; the default config's
#     mqtt.confirm_keys_file),
#   BOOT/config.txt: dtparam=i2c_arm=on, dtoverlay=dht11,gpiopin=4,
#     dtoverlay=w1-gpio,gpiopin=17, each added once.
# Running it again changes nothing (except the binary, if it was rebuilt).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
DIST=${DIST:-$repo/dist}
CONFIRM_KEYS=${CONFIRM_KEYS:-}
. "$here/confirm-keys.sh"

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
	echo "usage: [CONFIRM_KEYS=confirm-keys.pem] $0 ROOTFS [BOOT]" >&2
	exit 2
fi
[ -z "$CONFIRM_KEYS" ] || confirm_keys_check "$CONFIRM_KEYS" flash-sd
root=${1%/}
[ -d "$root/etc" ] || { echo "flash-sd: $root does not look like a root filesystem (no etc/)" >&2; exit 1; }
boot=${2:-}
if [ -z "$boot" ]; then
	for b in "$root/boot/firmware" "$root/boot"; do
		if [ -f "$b/config.txt" ]; then boot=$b; break; fi
	done
fi
if [ -z "$boot" ] || [ ! -f "$boot/config.txt" ]; then
	echo "flash-sd: no config.txt found; pass the boot partition: $0 ROOTFS BOOT" >&2
	exit 1
fi

arch=${ARCH:-}
if [ -z "$arch" ]; then
	if [ -e "$root/lib/ld-linux-aarch64.so.1" ] || [ -e "$root/usr/lib/ld-linux-aarch64.so.1" ]; then
		arch=arm64
	else
		arch=armv6 # Raspberry Pi OS armhf is ARMv6: runs on every 32-bit Pi
	fi
fi
bin=$DIST/edge-agent_linux_$arch
[ -f "$bin" ] || { echo "flash-sd: $bin not found; run 'make pi' first" >&2; exit 1; }

# put SRC DST MODE: copy only when the content differs, so a second run
# leaves timestamps alone.
put() {
	if ! cmp -s "$1" "$2"; then
		install -D -m "$3" "$1" "$2"
	fi
	chmod "$3" "$2"
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

put "$bin" "$root/usr/local/bin/edge-agent" 0755

sed 's#^ExecStart=/usr/bin/edge-agent#ExecStart=/usr/local/bin/edge-agent#' \
	"$repo/systemd/edge-agent.service" > "$tmp/edge-agent.service"
put "$tmp/edge-agent.service" "$root/etc/systemd/system/edge-agent.service" 0644
sed 's#^ExecStart=/usr/bin/edge-agent#ExecStart=/usr/local/bin/edge-agent#' \
	"$repo/systemd/edge-agent-update-guard.service" > "$tmp/edge-agent-update-guard.service"
put "$tmp/edge-agent-update-guard.service" "$root/etc/systemd/system/edge-agent-update-guard.service" 0644
put "$repo/systemd/edge-agent-update-guard.timer" "$root/etc/systemd/system/edge-agent-update-guard.timer" 0644

cat > "$tmp/sysusers.conf" <<'SYSUSERS'
# edge-agent's user (written by sensorpipe's scripts/flash-sd.sh)
g i2c - -
g gpio - -
u edge-agent - "edge-agent sensor daemon" /var/lib/edge-agent /usr/sbin/nologin
m edge-agent i2c
m edge-agent gpio
SYSUSERS
put "$tmp/sysusers.conf" "$root/usr/lib/sysusers.d/edge-agent.conf" 0644

# systemd-sysusers.service runs only after an OS update, so a oneshot unit
# applies the file on every boot (it is idempotent and quick).
cat > "$tmp/edge-agent-sysusers.service" <<'UNIT'
# Written by sensorpipe's scripts/flash-sd.sh: creates the edge-agent user.
[Unit]
Description=Create the edge-agent system user
Before=edge-agent.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/bin/systemd-sysusers /usr/lib/sysusers.d/edge-agent.conf

[Install]
RequiredBy=edge-agent.service
UNIT
put "$tmp/edge-agent-sysusers.service" "$root/etc/systemd/system/edge-agent-sysusers.service" 0644

printf '# I2C device nodes for the BME280 (written by scripts/flash-sd.sh)\ni2c-dev\n' > "$tmp/modules.conf"
put "$tmp/modules.conf" "$root/etc/modules-load.d/edge-agent.conf" 0644

# Enable the units the way `systemctl enable` would.
link() {
	mkdir -p "$(dirname "$2")"
	[ "$(readlink "$2" 2>/dev/null)" = "$1" ] || ln -sfn "$1" "$2"
}
link /etc/systemd/system/edge-agent.service "$root/etc/systemd/system/multi-user.target.wants/edge-agent.service"
link /etc/systemd/system/edge-agent-sysusers.service "$root/etc/systemd/system/edge-agent.service.requires/edge-agent-sysusers.service"
link /etc/systemd/system/edge-agent-update-guard.timer "$root/etc/systemd/system/timers.target.wants/edge-agent-update-guard.timer"

if [ -e "$root/etc/edge-agent/config.yaml" ]; then
	echo "flash-sd: keeping the existing /etc/edge-agent/config.yaml"
else
	install -D -m 0644 "$repo/systemd/edge-agent.config.yaml" "$root/etc/edge-agent/config.yaml"
	echo "flash-sd: wrote $root/etc/edge-agent/config.yaml: edit device_id, sensors and mqtt before booting"
fi

if [ -n "$CONFIRM_KEYS" ]; then
	put "$CONFIRM_KEYS" "$root/etc/edge-agent/confirm-keys.pem" 0644
elif [ ! -e "$root/etc/edge-agent/confirm-keys.pem" ] && confirm_keys_needed "$root/etc/edge-agent/config.yaml"; then
	echo "flash-sd: the config reads /etc/edge-agent/confirm-keys.pem, which is missing: run again with CONFIRM_KEYS=confirm-keys.pem (openssl pkey -in confirm.key -pubout)"
fi

# Each line once; appended under [all] so an earlier [cm4]/[pi4] section
# does not swallow it.
missing=()
for l in dtparam=i2c_arm=on dtoverlay=dht11,gpiopin=4 dtoverlay=w1-gpio,gpiopin=17; do
	grep -qxF "$l" "$boot/config.txt" || missing+=("$l")
done
if [ ${#missing[@]} -gt 0 ]; then
	if [ -s "$boot/config.txt" ] && [ -n "$(tail -c1 "$boot/config.txt")" ]; then
		echo >> "$boot/config.txt"
	fi
	{
		echo "# edge-agent sensors (scripts/flash-sd.sh): I2C for BME280, DHT22 on GPIO4, DS18B20 on GPIO17"
		echo "[all]"
		printf '%s\n' "${missing[@]}"
	} >> "$boot/config.txt"
	echo "flash-sd: added to $boot/config.txt: ${missing[*]}"
fi
echo "flash-sd: installed edge-agent ($arch) on $root; it starts at boot"
