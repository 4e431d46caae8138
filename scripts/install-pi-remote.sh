#!/bin/sh
# Runs on the Pi as root, from the staging directory install-pi.sh copied
# it to (next to edge-agent, edge-agent.service, the update guard's
# service and timer, config.yaml and, with
# CONFIRM_KEYS, confirm-keys.pem).
# ROOT prefixes every installed path (tests only; empty on a Pi).
set -eu
src=$(cd "$(dirname "$0")" && pwd)
ROOT=${ROOT:-}

for g in i2c gpio; do
	getent group "$g" >/dev/null || groupadd --system "$g"
done
if ! getent passwd edge-agent >/dev/null; then
	useradd --system --user-group --home-dir /var/lib/edge-agent --no-create-home \
		--shell /usr/sbin/nologin --comment "edge-agent sensor daemon" edge-agent
fi
usermod --append --groups i2c,gpio edge-agent

install -d -m 0755 "$ROOT/usr/local/bin" "$ROOT/etc/systemd/system" "$ROOT/etc/edge-agent" "$ROOT/etc/modules-load.d"
# /dev/i2c-* for the BME280 (and the unit's DeviceAllow=char-i2c): load
# i2c-dev now and at every boot.
printf '# I2C device nodes for the BME280 (written by install-pi.sh)\ni2c-dev\n' > "$ROOT/etc/modules-load.d/edge-agent.conf"
modprobe i2c-dev 2>/dev/null || true
install -m 0755 "$src/edge-agent" "$ROOT/usr/local/bin/edge-agent"
install -m 0644 "$src/edge-agent.service" "$ROOT/etc/systemd/system/edge-agent.service"
# The update guard (rolls back an over-the-air version not healthy in time).
install -m 0644 "$src/edge-agent-update-guard.service" "$ROOT/etc/systemd/system/edge-agent-update-guard.service"
install -m 0644 "$src/edge-agent-update-guard.timer" "$ROOT/etc/systemd/system/edge-agent-update-guard.timer"
if [ -e "$ROOT/etc/edge-agent/config.yaml" ]; then
	echo "install-pi: keeping the existing /etc/edge-agent/config.yaml"
else
	install -m 0644 "$src/config.yaml" "$ROOT/etc/edge-agent/config.yaml"
	echo "install-pi: wrote /etc/edge-agent/config.yaml: edit device_id, sensors and mqtt, then: sudo systemctl restart edge-agent"
fi
conf=$ROOT/etc/edge-agent/config.yaml
keys=$ROOT/etc/edge-agent/confirm-keys.pem
if [ -f "$src/confirm-keys.pem" ]; then
	install -m 0644 "$src/confirm-keys.pem" "$keys"
	echo "install-pi: wrote /etc/edge-agent/confirm-keys.pem (the forwarders' public keys: only confirmations they signed delete readings)"
fi
rm -rf "$src"

systemctl daemon-reload
systemctl enable edge-agent.service
systemctl enable --now edge-agent-update-guard.timer
if grep -q 'YOUR-CLUSTER' "$conf"; then
	# Like the .deb: no point starting against the placeholder broker.
	echo "install-pi: not started yet: set mqtt.url in /etc/edge-agent/config.yaml, then: sudo systemctl restart edge-agent"
	exit 0
fi
if [ ! -e "$keys" ] && grep -Eq '^[[:space:]]*confirm_keys_file:[[:space:]]*/etc/edge-agent/confirm-keys\.pem' "$conf"; then
	echo "install-pi: not started yet: the config reads /etc/edge-agent/confirm-keys.pem, which is missing; run again with CONFIRM_KEYS=confirm-keys.pem (openssl pkey -in confirm.key -pubout), then: sudo systemctl restart edge-agent"
	exit 0
fi
systemctl restart edge-agent.service || true
systemctl --no-pager --lines=20 status edge-agent.service || true
