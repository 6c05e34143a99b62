package token

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/kds-engine/kds-engine/engine/internal/trustfile"
)

// LoadOrCreateClusterID returns the cluster id stored in path: the name of
// one global that its zone tokens carry as their audience. When the file
// does not exist it writes a new random id (16 bytes, hex) with mode 0600
// (creating missing directories with mode 0700); created reports whether
// that happened. The file must pass trustfile's rule for public files and
// hold one id (ValidateClusterID); errors name the file.
//
// Creation is safe against a concurrent creator (global starting while
// `kds-engine token generate` runs): the id is written to a temporary file
// and linked into place, so exactly one id wins and both use it.
func LoadOrCreateClusterID(path string) (id string, created bool, err error) {
	id, err = loadClusterID(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return id, false, err
	}
	var raw [16]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", false, fmt.Errorf("generate cluster id: %w", err)
	}
	if err := createFile(path, []byte(hex.EncodeToString(raw[:])+"\n")); err != nil {
		if !errors.Is(err, fs.ErrExist) {
			return "", false, fmt.Errorf("create cluster id file: %w", err)
		}
		// Somebody else created it between our load and our link.
		id, err = loadClusterID(path)
		return id, false, err
	}
	id, err = loadClusterID(path)
	return id, err == nil, err
}

func loadClusterID(path string) (string, error) {
	data, err := trustfile.ReadFile(path, trustfile.Public, "cluster id file", 1<<10)
	if err != nil {
		return "", err
	}
	id := strings.TrimSpace(string(data))
	if err := ValidateClusterID(id); err != nil {
		return "", fmt.Errorf("cluster id file %s: %w", path, err)
	}
	return id, nil
}

// createFile writes data to a new file at path (mode 0600, directories
// 0700) through a temporary file linked into place: fs.ErrExist when path
// exists.
func createFile(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	// os.CreateTemp creates the file with mode 0600.
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) //nolint:errcheck // best effort; gone after a successful link anyway
	if _, err := tmp.Write(data); err != nil {
		tmp.Close() //nolint:errcheck,gosec // the write error is the one worth reporting
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close() //nolint:errcheck,gosec // the sync error is the one worth reporting
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Link(tmp.Name(), path)
}
