//go:build !linux

package kdsbench

import "os"

// fdatasync falls back to fsync where there is no fdatasync, as bbolt does.
func fdatasync(f *os.File) error { return f.Sync() }
