// Package update is the agent's side of over-the-air updates
// (docs/DESIGN.md, "Over-the-air updates"; docs/UPDATE.md).
//
// Everything it keeps lives under update.dir (/var/lib/edge-agent/update
// on a Pi): state.json (State: the committed version, the one on trial,
// the versions that failed; versioned, written atomically and changed only
// under a lock through Modify), versions/<version>/ (a staged binary and
// its signed manifest) and download/<version>.part (a download to resume).
//
// A release is downloaded over HTTPS with Range resumes, never beyond the
// manifest's size and only with twice that size free, verified (size and
// sha256; the manifest's signature was verified by agent/update/release
// before the download) and staged by a rename on the same filesystem.
//
// It does not decide which offer applies (agent/update/release does) and
// does not speak MQTT (the agent's publisher delivers the offers).
package update
