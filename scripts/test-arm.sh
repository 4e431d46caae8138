#!/usr/bin/env bash
# Runs the packages whose correctness depends on word size (the bbolt buffer,
# and the agent's packages that run on a 32-bit Pi) as linux/arm GOARM=6
# binaries under qemu-user. CI must run them; elsewhere
# a missing qemu is reported and skipped, never silently passed.
set -euo pipefail
cd "$(dirname "$0")/.."
qemu=$(command -v qemu-arm-static || command -v qemu-arm || true)
if [ -z "$qemu" ]; then
	if [ "${CI:-}" = true ]; then
		echo "test-arm: qemu-arm not found, and CI requires it (apt-get install qemu-user-static)" >&2
		exit 1
	fi
	echo "test-arm: SKIPPED: qemu-arm not installed (apt-get install qemu-user-static)" >&2
	exit 0
fi
GOOS=linux GOARCH=arm GOARM=6 CGO_ENABLED=0 go test -exec "$qemu" -timeout 10m ./buffer/...
# The rest of what runs on a 32-bit Pi: 64-bit counters and atomics,
# time and size parsing, the drivers' fixed-point maths. Packages whose
# tests exec a built binary (agent/daemon, agent/bufcmd, agent/sensorscmd)
# cannot run here without binfmt; scripts/test-qemu.sh runs that binary.
GOOS=linux GOARCH=arm GOARM=6 CGO_ENABLED=0 go test -exec "$qemu" -timeout 10m \
	./drivers/... ./agent/config/... ./agent/clock/... ./agent/poller/... ./agent/status/... ./agent/mqttpub/...
