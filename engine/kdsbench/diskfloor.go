package kdsbench

import (
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// diskFloor times what a path of durable commits waits for on this disk at
// the least: syncs page writes, each followed by the data sync bbolt uses,
// in series, into a file of its own next to the engines' stores. A bbolt
// commit holds two (its pages, then its meta page); a path through two
// commits cannot be faster than four, whatever the engine does between
// them. Not safe for concurrent use.
type diskFloor struct {
	f     *os.File
	syncs int
	page  []byte
	next  int64
}

// floorPages is how many pages the floor's file cycles over (written once
// first, so that no sample grows the file).
const floorPages = 16

func newDiskFloor(dir string, syncs int) (*diskFloor, error) {
	f, err := os.Create(filepath.Join(dir, "disk-floor"))
	if err != nil {
		return nil, fmt.Errorf("disk floor: %w", err)
	}
	d := &diskFloor{f: f, syncs: syncs, page: make([]byte, 4096)}
	if _, err := f.Write(make([]byte, floorPages*len(d.page))); err != nil {
		f.Close()
		return nil, fmt.Errorf("disk floor: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, fmt.Errorf("disk floor: %w", err)
	}
	return d, nil
}

// sample writes and syncs d.syncs pages in series and returns how long
// that took.
func (d *diskFloor) sample() (time.Duration, error) {
	start := time.Now()
	for range d.syncs {
		d.page[0]++
		if _, err := d.f.WriteAt(d.page, d.next*int64(len(d.page))); err != nil {
			return 0, fmt.Errorf("disk floor: %w", err)
		}
		d.next = (d.next + 1) % floorPages
		if err := fdatasync(d.f); err != nil {
			return 0, fmt.Errorf("disk floor: %w", err)
		}
	}
	return time.Since(start), nil
}

func (d *diskFloor) close() error { return d.f.Close() }
