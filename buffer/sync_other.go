//go:build !linux

package buffer

import "os"

const walSyncFlag = os.O_SYNC
