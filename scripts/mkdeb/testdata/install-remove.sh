#!/bin/sh
# Runs inside a throwaway overlay of this machine's root (see
# TestDebs/install): installs the .deb with the real dpkg, checks what
# postinst did, upgrades over an edited conffile, removes and purges.
set -eu
deb=$1
step() { echo "== $*"; }
fail() { echo "FAIL: $*"; exit 1; }

step install
dpkg -i "$deb"
getent passwd edge-agent >/dev/null || fail "no edge-agent user"
groups=$(id -nG edge-agent)
case " $groups " in *" i2c "*) ;; *) fail "edge-agent not in i2c: $groups" ;; esac
case " $groups " in *" gpio "*) ;; *) fail "edge-agent not in gpio: $groups" ;; esac
shell=$(getent passwd edge-agent | cut -d: -f7)
[ "$shell" = /usr/sbin/nologin ] || fail "edge-agent has a login shell: $shell"
/usr/bin/edge-agent version | grep -q '^edge-agent ' || fail "edge-agent version"
# The shipped config reads the forwarders' public key, which the operator
# (or install-pi.sh / flash-sd.sh) puts in place: check refuses it until then.
out=$(/usr/bin/edge-agent config check --config /etc/edge-agent/config.yaml 2>&1) && fail "config check passed without /etc/edge-agent/confirm-keys.pem"
case "$out" in *mqtt.confirm_keys_file*) ;; *) fail "config check without keys does not name mqtt.confirm_keys_file: $out" ;; esac
printf '%s\n' '-----BEGIN PUBLIC KEY-----' 'MCowBQYDK2VwAyEAJTmaYaLTN8kHF5gHYCLAl/nSYlhO1VVvWpu+7ZgfcaI=' '-----END PUBLIC KEY-----' > /etc/edge-agent/confirm-keys.pem
/usr/bin/edge-agent config check --config /etc/edge-agent/config.yaml || fail "config check on the shipped config"
[ "$(readlink /etc/systemd/system/multi-user.target.wants/edge-agent.service)" = /lib/systemd/system/edge-agent.service ] \
	|| fail "unit not enabled: $(ls -l /etc/systemd/system/multi-user.target.wants/ 2>&1)"
dpkg-query -W -f='${Conffiles}\n' edge-agent | grep -q '/etc/edge-agent/config.yaml' || fail "config.yaml is not a conffile"

step upgrade keeps an edited conffile
echo '# edited by the test' >> /etc/edge-agent/config.yaml
dpkg -i "$deb"
grep -q '^# edited by the test$' /etc/edge-agent/config.yaml || fail "upgrade replaced the edited config"

step remove
mkdir -p /var/lib/edge-agent && echo x > /var/lib/edge-agent/buffer.db
dpkg -r edge-agent
[ ! -e /usr/bin/edge-agent ] || fail "binary left after remove"
[ -f /etc/edge-agent/config.yaml ] || fail "remove deleted the conffile"
[ -f /var/lib/edge-agent/buffer.db ] || fail "remove deleted the buffer"

step purge
dpkg -P edge-agent
[ ! -e /etc/edge-agent/config.yaml ] || fail "purge left the config"
[ ! -e /var/lib/edge-agent ] || fail "purge left /var/lib/edge-agent"
[ ! -e /etc/systemd/system/multi-user.target.wants/edge-agent.service ] || fail "purge left the enable link"
[ ! -L /etc/systemd/system/edge-agent.service ] || fail "purge left the unit masked"
getent passwd edge-agent >/dev/null || fail "purge removed the user (Debian keeps it)"
echo "== ok"
