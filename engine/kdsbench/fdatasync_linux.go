package kdsbench

import (
	"os"
	"syscall"
)

// fdatasync is the data sync bbolt uses on Linux.
func fdatasync(f *os.File) error { return syscall.Fdatasync(int(f.Fd())) }
