package kdsbench

import (
	"os"
	"runtime/pprof"
	"sync"
)

// StartCPUProfile starts a CPU profile written to path (nothing when path
// is empty) and returns what stops it and closes the file. Stopping again
// does nothing and returns nil. Only one CPU profile runs in a process at
// a time: starting a second one fails.
func StartCPUProfile(path string) (stop func() error, err error) {
	if path == "" {
		return func() error { return nil }, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	var once sync.Once
	return func() error {
		var err error
		once.Do(func() {
			pprof.StopCPUProfile()
			err = f.Close()
		})
		return err
	}, nil
}
