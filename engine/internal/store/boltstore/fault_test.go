package boltstore_test

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kds-engine/kds-engine/engine/internal/resource"
	"github.com/kds-engine/kds-engine/engine/internal/store"
	"github.com/kds-engine/kds-engine/engine/internal/store/boltstore"
	"github.com/kds-engine/kds-engine/engine/internal/store/storetest"
)

var versionFormat = regexp.MustCompile(`^([a-z2-7]{13})-([0-9]+)$`)

// counter and epoch split a local version "<epoch>-<counter>".
func counter(t *testing.T, v string) uint64 {
	t.Helper()
	m := versionFormat.FindStringSubmatch(v)
	require.NotNil(t, m, "version %q is not <epoch>-<counter>", v)
	n, err := strconv.ParseUint(m[2], 10, 64)
	require.NoError(t, err)
	return n
}

func epoch(t *testing.T, v string) string {
	t.Helper()
	m := versionFormat.FindStringSubmatch(v)
	require.NotNil(t, m, "version %q is not <epoch>-<counter>", v)
	return m[1]
}

func dp(content string) *resource.Resource {
	r := storetest.Res("Dataplane", "dp-1")
	r.Spec = json.RawMessage(fmt.Sprintf(`{"content":%q}`, content))
	return r
}

// TestFaultVersionsAfterReopen: a key deleted and created again with other
// content after a restart gets a version it never had, and the counter part
// keeps growing across the restart.
func TestFaultVersionsAfterReopen(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	s, err := boltstore.Open(dir)
	require.NoError(t, err)
	first, err := s.Create(ctx, dp("first"))
	require.NoError(t, err)
	require.NoError(t, s.Close())

	s = open(t, dir)
	require.NoError(t, s.Delete(ctx, first.Key(), first.Version))
	second, err := s.Create(ctx, dp("second"))
	require.NoError(t, err)
	assert.NotEqual(t, first.Version, second.Version, "other content after a reopen, other version")
	assert.Greater(t, counter(t, second.Version), counter(t, first.Version), "the counter continues")
	assert.NotEqual(t, epoch(t, first.Version), epoch(t, second.Version), "every open draws an epoch")
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	require.NoError(t, err)
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	require.NoError(t, err)
	_, err = io.Copy(out, in)
	require.NoError(t, err)
	require.NoError(t, out.Close())
}

// TestFaultVersionsAfterRestore: a file put back from an older copy resumes
// the copy's counter, yet no version it assigns equals one assigned before
// the restore, in particular none assigned after the copy was taken (which
// peers may hold); the resources in the copy keep their versions.
func TestFaultVersionsAfterRestore(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	path := filepath.Join(dir, boltstore.FileName)
	seen := map[string]bool{}
	record := func(r *resource.Resource) *resource.Resource {
		t.Helper()
		require.False(t, seen[r.Version], "version %q assigned twice", r.Version)
		seen[r.Version] = true
		return r
	}

	s, err := boltstore.Open(dir)
	require.NoError(t, err)
	inCopy, err := s.Create(ctx, dp("in the copy"))
	require.NoError(t, err)
	record(inCopy)
	require.NoError(t, s.Close())
	// writeFive updates the dataplane and creates p0..p4 in s, recording
	// every version handed out.
	writeFive := func(s *boltstore.Store, when string) {
		for i := range 5 {
			r := dp(fmt.Sprintf("%s %d", when, i))
			r.Version = ""
			u, err := s.Update(ctx, r)
			require.NoError(t, err)
			record(u)
			created, err := s.Create(ctx, storetest.Res("MeshTimeout", fmt.Sprintf("p%d", i)))
			require.NoError(t, err)
			record(created)
		}
	}
	backup := filepath.Join(t.TempDir(), "backup.db")
	copyFile(t, path, backup)

	s, err = boltstore.Open(dir)
	require.NoError(t, err)
	writeFive(s, "after the copy")
	require.NoError(t, s.Close())

	copyFile(t, backup, path)
	s = open(t, dir)
	got, err := s.Get(ctx, inCopy.Key())
	require.NoError(t, err)
	assert.Equal(t, inCopy.Version, got.Version, "a restored resource keeps the version that named its content")
	assert.JSONEq(t, `{"content":"in the copy"}`, string(got.Spec))

	writeFive(s, "after the restore")
}

// TestFaultSessionGenerationsAfterReopen: generations keep growing across
// a restart, so a session fenced before it stays fenced after.
func TestFaultSessionGenerationsAfterReopen(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	s, err := boltstore.Open(dir)
	require.NoError(t, err)
	g1, err := s.ClaimSession(ctx, "z1")
	require.NoError(t, err)
	g2, err := s.ClaimSession(ctx, "z1")
	require.NoError(t, err)
	require.Greater(t, g2, g1)
	rev := s.Revision()
	assert.Zero(t, rev, "a claim commits no resource change")
	require.NoError(t, s.Close())

	s = open(t, dir)
	put := storetest.Res("Dataplane", "a")
	put.Zone, put.Version = "z1", "1"
	_, err = s.Apply(ctx, store.Batch{Put: []*resource.Resource{put}, Fence: &store.Fence{Zone: "z1", Generation: g2}})
	require.NoError(t, err, "the last claimed generation is still current after a reopen")
	g3, err := s.ClaimSession(ctx, "z1")
	require.NoError(t, err)
	assert.Greater(t, g3, g2)
	_, err = s.Apply(ctx, store.Batch{Put: []*resource.Resource{put}, Fence: &store.Fence{Zone: "z1", Generation: g2}})
	require.ErrorIs(t, err, store.ErrFenced)
	other, err := s.ClaimSession(ctx, "z2")
	require.NoError(t, err)
	assert.EqualValues(t, 1, other, "generations are per zone")
}

// TestFaultLimitAfterReopen: the per-(type, zone) counts are rebuilt from
// the file after a restart.
func TestFaultLimitAfterReopen(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	s, err := boltstore.Open(dir)
	require.NoError(t, err)
	_, err = s.Apply(ctx, storetest.Batch(5, 64, "z1", "1"))
	require.NoError(t, err)
	require.NoError(t, s.Close())

	s = open(t, dir)
	more := storetest.Batch(6, 64, "z1", "1")
	_, err = s.Apply(ctx, store.Batch{Put: more.Put[5:], Limit: 5})
	require.ErrorIs(t, err, store.ErrLimitExceeded)
	assert.Contains(t, err.Error(), "make 6 resources")
	_, err = s.Apply(ctx, store.Batch{Put: more.Put[5:], Limit: 6})
	require.NoError(t, err)
}
