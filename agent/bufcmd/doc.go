// Package bufcmd is `edge-agent buffer stats|list|export|verify|purge`, the
// debug view of the agent's offline buffer. While the agent holds the file
// it asks the agent's /buffer/ endpoint instead (agent/bufhttp).
//
// The command opens the bbolt file read-only and waits at most half a
// second for its lock. When the agent holds the lock, stats, list and
// export are answered by the agent's status endpoint (status_listen in the
// config, or --status); verify and purge need the file itself and say how
// to get it (stop the agent). purge never runs while the agent does.
//
// It does not decode or re-encode readings beyond what printing needs: list
// --json and export print the stored wire bytes, one reading per line.
//
// Example:
//
//	edge-agent buffer stats
//	edge-agent buffer list -n 5 --newest
//	edge-agent buffer export --from 1000 > readings.jsonl
//	sudo systemctl stop edge-agent && edge-agent buffer purge --upto 1000 --yes
package bufcmd
