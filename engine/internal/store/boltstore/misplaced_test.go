package boltstore_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kds-engine/kds-engine/engine/internal/store/boltstore"
	"github.com/kds-engine/kds-engine/engine/internal/store/storetest"
	"github.com/kds-engine/kds-engine/engine/internal/testsupport/logbuf"
)

// misplace writes a store the way engines before MoveMisplacedFile did:
// opened on dir/kds.db, so the file is dir/kds.db/kds.db.
func misplace(t *testing.T, dir string) string {
	t.Helper()
	s, err := boltstore.Open(filepath.Join(dir, boltstore.FileName))
	require.NoError(t, err)
	c, err := s.Create(t.Context(), storetest.Res("T", "kept"))
	require.NoError(t, err)
	require.NoError(t, s.Close())
	return c.Version
}

func TestMoveMisplacedFile(t *testing.T) {
	dir := t.TempDir()
	version := misplace(t, dir)
	var out logbuf.Buffer
	log := hclog.New(&hclog.LoggerOptions{Output: &out})
	require.NoError(t, boltstore.MoveMisplacedFile(dir, log))

	fi, err := os.Stat(filepath.Join(dir, boltstore.FileName))
	require.NoError(t, err)
	assert.True(t, fi.Mode().IsRegular(), "DATA/kds.db is the file now")
	assert.Len(t, out.Lines("[INFO]", "moved the database file", filepath.Join(dir, "kds.db", "kds.db")), 1, out.String())

	s := open(t, dir)
	assert.Equal(t, filepath.Join(dir, boltstore.FileName), s.Path())
	got, err := s.Get(t.Context(), storetest.Res("T", "kept").Key())
	require.NoError(t, err)
	assert.Equal(t, version, got.Version, "the data came along")
	require.NoError(t, s.Close())

	// Nothing to do the second time, nor for a store in its place.
	var again logbuf.Buffer
	require.NoError(t, boltstore.MoveMisplacedFile(dir, hclog.New(&hclog.LoggerOptions{Output: &again})))
	assert.Empty(t, again.String())
	require.NoError(t, boltstore.MoveMisplacedFile(t.TempDir(), log))
}

func TestMoveMisplacedFileResumes(t *testing.T) {
	// A crash after the first step left dir/kds.db.moving and no dir/kds.db.
	dir := t.TempDir()
	version := misplace(t, dir)
	final := filepath.Join(dir, boltstore.FileName)
	require.NoError(t, os.Rename(filepath.Join(final, boltstore.FileName), final+".moving"))
	require.NoError(t, os.Remove(final))
	require.NoError(t, boltstore.MoveMisplacedFile(dir, hclog.NewNullLogger()))
	s := open(t, dir)
	got, err := s.Get(t.Context(), storetest.Res("T", "kept").Key())
	require.NoError(t, err)
	assert.Equal(t, version, got.Version)
}

func TestMoveMisplacedFileRefusesForeignFiles(t *testing.T) {
	dir := t.TempDir()
	misplace(t, dir)
	require.NoError(t, os.WriteFile(filepath.Join(dir, boltstore.FileName, "notes.txt"), nil, 0o600))
	err := boltstore.MoveMisplacedFile(dir, hclog.NewNullLogger())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "notes.txt")
	assert.Contains(t, err.Error(), "by hand")
	_, err = os.Stat(filepath.Join(dir, boltstore.FileName, boltstore.FileName))
	require.NoError(t, err, "left alone")
}
