package boltstore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/hashicorp/go-hclog"
)

// MoveMisplacedFile moves a database file that engines before this one
// left at dir/kds.db/kds.db (they opened the store on the directory
// dir/kds.db) to dir/kds.db, where the documentation says it is, and logs
// that it did. It does nothing if there is no such file. The move is
// done in steps that a crash at any point leaves resumable: the file is
// first renamed to dir/kds.db.moving, the emptied directory removed, then
// the file renamed into place; a later call finishes a move that a crash
// interrupted. A directory dir/kds.db holding anything besides the
// database file is left alone, with an error saying what to do.
func MoveMisplacedFile(dir string, log hclog.Logger) error {
	final := filepath.Join(dir, FileName)
	moving := final + ".moving"
	fi, err := os.Stat(final)
	switch {
	case err == nil && fi.IsDir():
		old := filepath.Join(final, FileName)
		entries, err := os.ReadDir(final)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if e.Name() != FileName {
				return fmt.Errorf("%s is a directory holding %s besides the database file %s: move %s to %s by hand (with the engine stopped) and remove the directory", final, e.Name(), old, old, final)
			}
		}
		if len(entries) > 0 {
			if err := os.Rename(old, moving); err != nil {
				return fmt.Errorf("move misplaced database file %s: %w", old, err)
			}
		}
		if err := os.Remove(final); err != nil {
			return fmt.Errorf("move misplaced database file %s: remove its directory: %w", old, err)
		}
	case err == nil:
		return nil // a file in its place: nothing to do
	case !errors.Is(err, fs.ErrNotExist):
		return err
	}
	if _, err := os.Stat(moving); errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	if err := os.Rename(moving, final); err != nil {
		return fmt.Errorf("move misplaced database file to %s: %w", final, err)
	}
	log.Named("store").Info("moved the database file to where it belongs (engines before this one kept it one directory too deep)",
		"from", filepath.Join(final, FileName), "to", final)
	return nil
}
