package buffer

import "syscall"

// walSyncFlag makes each write to the log durable on return (synchronized
// I/O data integrity, like write+fdatasync in one system call). The log is
// preallocated, so normally only data, not metadata, is flushed.
const walSyncFlag = syscall.O_DSYNC
