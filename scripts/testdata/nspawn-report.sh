#!/bin/sh
# Runs inside the container booted by scripts/test-systemd.sh: waits for
# edge-agent to settle, exercises reload and stop, writes what systemd
# says to /root/report.txt and powers the container off.
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
	if systemctl reload edge-agent; then echo "Reload=ok"; else echo "Reload=failed"; fi
	sleep 2
	echo "AfterReload=$(systemctl show -p SubState --value edge-agent)"
	systemctl stop edge-agent
	echo "StopResult=$(systemctl show -p Result --value edge-agent)"
	echo "== units"
	systemctl list-units --all --no-pager --plain 'edge-agent*'
	echo "== journal"
	journalctl -u edge-agent --no-pager -o cat | tail -12
} > /root/report.txt 2>&1
systemctl poweroff
