# Sourced by install-pi.sh and flash-sd.sh: checks the file CONFIRM_KEYS
# names before it is copied to a Pi as /etc/edge-agent/confirm-keys.pem
# (mqtt.confirm_keys_file): the forwarders' Ed25519 public keys, as
#   openssl pkey -in confirm.key -pubout -out confirm-keys.pem
# writes them. A private key is refused: it must never leave the cloud.
confirm_keys_check() {
	if [ ! -r "$1" ]; then
		echo "$2: CONFIRM_KEYS=$1: cannot read it" >&2
		exit 2
	fi
	if grep -q 'PRIVATE KEY' "$1"; then
		echo "$2: CONFIRM_KEYS=$1 holds a private key; give the public key: openssl pkey -in $1 -pubout -out confirm-keys.pem" >&2
		exit 2
	fi
	if ! grep -q -- '-----BEGIN PUBLIC KEY-----' "$1"; then
		echo "$2: CONFIRM_KEYS=$1 holds no PEM public key (openssl pkey -in confirm.key -pubout -out confirm-keys.pem)" >&2
		exit 2
	fi
}

# confirm_keys_needed CONFIG: whether CONFIG reads /etc/edge-agent/confirm-keys.pem.
confirm_keys_needed() {
	grep -Eq '^[[:space:]]*confirm_keys_file:[[:space:]]*/etc/edge-agent/confirm-keys\.pem' "$1" 2>/dev/null
}
