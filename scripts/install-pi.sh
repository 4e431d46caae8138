#!/usr/bin/env bash
# Installs edge-agent on a running Raspberry Pi over ssh:
#   make pi && scripts/install-pi.sh pi@raspberrypi.local
# Asks the Pi its architecture (uname -m), copies the matching dist/ binary
# to /usr/local/bin, the unit to /etc/systemd/system, the default config to
# /etc/edge-agent/config.yaml unless one exists, loads i2c-dev (now and at
# boot), creates the edge-agent user (groups i2c, gpio), then enables the
# service and, once the config names a real broker (no YOUR-CLUSTER
# placeholder), restarts it and shows its status. The remote user needs sudo.
# CONFIRM_KEYS=confirm-keys.pem copies the forwarders' public keys (openssl
# pkey -pubout) to /etc/edge-agent/confirm-keys.pem, the default config's
# mqtt.confirm_keys_file; run it again with a new file to rotate keys.
# SSH, SCP and DIST can be overridden (tests use stand-ins for ssh/scp).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
SSH=${SSH:-ssh}
SCP=${SCP:-scp}
DIST=${DIST:-$repo/dist}
CONFIRM_KEYS=${CONFIRM_KEYS:-}
. "$here/confirm-keys.sh"

if [ $# -ne 1 ] || [ -z "$1" ]; then
	echo "usage: [CONFIRM_KEYS=confirm-keys.pem] $0 user@host" >&2
	exit 2
fi
host=$1
[ -z "$CONFIRM_KEYS" ] || confirm_keys_check "$CONFIRM_KEYS" install-pi

machine=$($SSH "$host" uname -m)
case "$machine" in
armv6l) arch=armv6 ;;                # Pi Zero, Pi 1
armv7l) arch=armv7 ;;                # Pi 2/3/4 with a 32-bit OS
aarch64 | arm64) arch=arm64 ;;       # Pi 3/4/5 with a 64-bit OS
x86_64) arch=amd64 ;;                # a PC, for trying it out
*)
	echo "install-pi: unsupported architecture $machine on $host" >&2
	exit 1
	;;
esac
bin=$DIST/edge-agent_linux_$arch
if [ ! -f "$bin" ]; then
	echo "install-pi: $bin not found; run 'make pi' first" >&2
	exit 1
fi
echo "install-pi: $host is $machine: installing $(basename "$bin")"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp "$bin" "$tmp/edge-agent"
sed 's#^ExecStart=/usr/bin/edge-agent#ExecStart=/usr/local/bin/edge-agent#' \
	"$repo/systemd/edge-agent.service" > "$tmp/edge-agent.service"
sed 's#^ExecStart=/usr/bin/edge-agent#ExecStart=/usr/local/bin/edge-agent#' \
	"$repo/systemd/edge-agent-update-guard.service" > "$tmp/edge-agent-update-guard.service"
cp "$repo/systemd/edge-agent-update-guard.timer" "$tmp/edge-agent-update-guard.timer"
cp "$repo/systemd/edge-agent.config.yaml" "$tmp/config.yaml"
cp "$here/install-pi-remote.sh" "$tmp/remote.sh"
staged=("$tmp/edge-agent" "$tmp/edge-agent.service" "$tmp/edge-agent-update-guard.service" "$tmp/edge-agent-update-guard.timer"
	"$tmp/config.yaml" "$tmp/remote.sh")
if [ -n "$CONFIRM_KEYS" ]; then
	cp "$CONFIRM_KEYS" "$tmp/confirm-keys.pem"
	staged+=("$tmp/confirm-keys.pem")
fi

# A fresh private directory on the Pi (mktemp -d: mode 0700, a name nobody
# can guess or plant beforehand); remote.sh removes it when done.
stage=$($SSH "$host" mktemp -d)
case "$stage" in
/*) ;;
*)
	echo "install-pi: mktemp -d on $host gave '$stage'" >&2
	exit 1
	;;
esac
$SCP "${staged[@]}" "$host:$stage/"
$SSH "$host" "sudo sh $stage/remote.sh"
