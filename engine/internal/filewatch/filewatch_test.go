package filewatch

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/kds-engine/kds-engine/engine/internal/testsupport/fakeclock"
	"github.com/kds-engine/kds-engine/engine/internal/testsupport/logbuf"
)

// The package promises to work without goroutines of its own.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	interval = time.Second
	warnMsg  = "files changed but cannot be used; keeping the previous material"
	adoptMsg = "material adopted"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// errBroken is what load returns for a file whose content starts with
// "broken".
var errBroken = errors.New("broken content")

// harness is a Watched[string] over files whose material is their contents
// joined by "+". Adopted and Rejected log the way the package's users do,
// and count their calls.
type harness struct {
	w     *Watched[string]
	files []string
	clk   *fakeclock.Clock
	logs  *logbuf.Buffer

	loads    atomic.Int64
	adopted  []string // material, in the order adopted
	reloads  []bool   // the reload flag of each Adopted call
	rejected []error
}

func newHarness(t *testing.T, files []string, contents ...string) *harness {
	t.Helper()
	for i, f := range files {
		writeFile(t, f, contents[i])
	}
	return newHarnessOn(t, files)
}

// newHarnessOn is newHarness on files that already exist.
func newHarnessOn(t *testing.T, files []string) *harness {
	t.Helper()
	h := &harness{files: files, clk: fakeclock.New(t0), logs: &logbuf.Buffer{}}
	w, err := New(h.config(interval))
	require.NoError(t, err)
	h.w = w
	return h
}

func (h *harness) config(iv time.Duration) Config[string] {
	log := hclog.New(&hclog.LoggerOptions{Output: h.logs, Level: hclog.Debug})
	return Config[string]{
		Files: h.files,
		Load: func() (string, error) {
			h.loads.Add(1)
			return load(h.files)
		},
		// Called under the watcher's lock: no locking of our own.
		Adopted: func(v string, reload bool) {
			h.adopted = append(h.adopted, v)
			h.reloads = append(h.reloads, reload)
			log.Info(adoptMsg, "material", v, "reload", reload)
		},
		Rejected: func(err error) {
			h.rejected = append(h.rejected, err)
			log.Warn(warnMsg, "files", h.files, "error", err)
		},
		Interval: iv,
		Now:      h.clk.Now,
	}
}

func load(files []string) (string, error) {
	parts := make([]string, len(files))
	for i, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return "", err
		}
		if strings.HasPrefix(string(data), "broken") {
			return "", fmt.Errorf("%s: %w", f, errBroken)
		}
		parts[i] = string(data)
	}
	return strings.Join(parts, "+"), nil
}

// next returns the material after the check interval has passed.
func (h *harness) next() string {
	h.clk.Advance(interval)
	return h.w.Current()
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
}

// replaceFile writes content into a new file and renames it over path.
func replaceFile(t *testing.T, path, content string) {
	t.Helper()
	writeFile(t, path+".tmp", content)
	require.NoError(t, os.Rename(path+".tmp", path))
}

func fileIn(t *testing.T, name string) string {
	t.Helper()
	return filepath.Join(t.TempDir(), name)
}

func TestNewLoadsOnce(t *testing.T) {
	h := newHarness(t, []string{fileIn(t, "a")}, "v1")
	assert.Equal(t, "v1", h.w.Current())
	for range 3 {
		assert.Equal(t, "v1", h.next())
	}
	assert.EqualValues(t, 1, h.loads.Load(), "files looked at and found unchanged are not read again")
	assert.Equal(t, []string{"v1"}, h.adopted)
	assert.Equal(t, []bool{false}, h.reloads, "the first load is not a reload")
	assert.Empty(t, h.rejected)
	assert.Len(t, h.logs.Lines("[INFO]", adoptMsg, "material=v1", "reload=false"), 1, h.logs.String())
}

func TestNewReturnsFirstLoadError(t *testing.T) {
	f := fileIn(t, "a")
	writeFile(t, f, "broken")
	h := &harness{files: []string{f}, clk: fakeclock.New(t0), logs: &logbuf.Buffer{}}
	w, err := New(h.config(interval))
	require.ErrorIs(t, err, errBroken, "the error is returned as is")
	assert.Nil(t, w)
	assert.Empty(t, h.adopted)
	assert.Empty(t, h.rejected, "a failed first load is the caller's error, not a rejected change")

	missing := fileIn(t, "missing")
	_, err = New(Config[string]{Files: []string{missing}, Load: func() (string, error) { return load([]string{missing}) }})
	require.ErrorIs(t, err, os.ErrNotExist)
}

// Adopted, Rejected and Now are optional; Now defaults to the real clock.
func TestOptionalCallbacks(t *testing.T) {
	f := fileIn(t, "a")
	writeFile(t, f, "v1")
	w, err := New(Config[string]{Files: []string{f}, Load: func() (string, error) { return load([]string{f}) }, Interval: time.Millisecond})
	require.NoError(t, err)
	assert.Equal(t, "v1", w.Current())

	replaceFile(t, f, "broken")
	lookedAt := func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return slices.Equal(w.stamps, []Stamp{Stat(f)})
	}
	require.Eventually(t, func() bool { return w.Current() == "v1" && lookedAt() }, 10*time.Second, time.Millisecond,
		"the broken change was looked at and not adopted")
	replaceFile(t, f, "v2")
	require.Eventually(t, func() bool { return w.Current() == "v2" }, 10*time.Second, time.Millisecond,
		"adopted once the real clock has moved past the interval")
}

func TestNoLookWithinInterval(t *testing.T) {
	f := fileIn(t, "a")
	h := newHarness(t, []string{f}, "v1")
	replaceFile(t, f, "v2")

	h.clk.Advance(interval - time.Nanosecond)
	for range 3 {
		assert.Equal(t, "v1", h.w.Current(), "the files are not looked at within the interval")
	}
	assert.EqualValues(t, 1, h.loads.Load())

	h.clk.Advance(time.Nanosecond)
	assert.Equal(t, "v2", h.w.Current(), "looked at once the interval has passed")
	assert.EqualValues(t, 2, h.loads.Load())
	assert.Equal(t, []bool{false, true}, h.reloads)
	assert.Len(t, h.logs.Lines("[INFO]", adoptMsg, "material=v2", "reload=true"), 1, h.logs.String())
}

// The interval counts from the last look at the files, whether or not it
// found a change; uses in between do not push it out.
func TestIntervalCountsFromLastLook(t *testing.T) {
	f := fileIn(t, "a")
	h := newHarness(t, []string{f}, "v1")

	// A look that finds nothing new still starts a new interval.
	assert.Equal(t, "v1", h.next())
	replaceFile(t, f, "v2")
	h.clk.Advance(interval / 2)
	assert.Equal(t, "v1", h.w.Current(), "half an interval after a look")

	// Uses within the interval do not move the next look.
	h.clk.Advance(interval / 2)
	assert.Equal(t, "v2", h.w.Current())
	replaceFile(t, f, "v3")
	for range 9 {
		h.clk.Advance(interval / 10)
		assert.Equal(t, "v2", h.w.Current())
	}
	h.clk.Advance(interval / 10)
	assert.Equal(t, "v3", h.w.Current())
}

func TestZeroOrNegativeIntervalLooksOnEveryUse(t *testing.T) {
	for _, iv := range []time.Duration{0, -time.Second} {
		t.Run(iv.String(), func(t *testing.T) {
			f := fileIn(t, "a")
			h := &harness{files: []string{f}, clk: fakeclock.New(t0), logs: &logbuf.Buffer{}}
			writeFile(t, f, "v1")
			w, err := New(h.config(iv))
			require.NoError(t, err)
			replaceFile(t, f, "v2")
			assert.Equal(t, "v2", w.Current(), "no clock movement needed")
			replaceFile(t, f, "v3")
			assert.Equal(t, "v3", w.Current())
		})
	}
}

// Each way a file can change is noticed on its own: the other parts of the
// stat stay as they were.
func TestChangeDetected(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(t *testing.T, path string)
		same   func(t *testing.T, before, after Stamp)
	}{
		{"size, in place", func(t *testing.T, path string) {
			old := modTime(t, path)
			writeFile(t, path, "v2.1")
			require.NoError(t, os.Chtimes(path, old, old))
		}, func(t *testing.T, before, after Stamp) {
			require.Equal(t, before.mtime, after.mtime)
			require.Equal(t, before.ino, after.ino)
			require.NotEqual(t, before.size, after.size)
		}},
		{"modification time, in place", func(t *testing.T, path string) {
			old := modTime(t, path)
			writeFile(t, path, "v2")
			require.NoError(t, os.Chtimes(path, old.Add(time.Second), old.Add(time.Second)))
		}, func(t *testing.T, before, after Stamp) {
			require.Equal(t, before.size, after.size)
			require.Equal(t, before.ino, after.ino)
			require.NotEqual(t, before.mtime, after.mtime)
		}},
		{"renamed over, same size and time", func(t *testing.T, path string) {
			old := modTime(t, path)
			writeFile(t, path+".new", "v2")
			require.NoError(t, os.Chtimes(path+".new", old, old))
			require.NoError(t, os.Rename(path+".new", path))
		}, func(t *testing.T, before, after Stamp) {
			require.Equal(t, before.size, after.size)
			require.Equal(t, before.mtime, after.mtime)
			require.NotEqual(t, before.ino, after.ino)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := fileIn(t, "a")
			h := newHarness(t, []string{f}, "v1")
			before := Stat(f)
			tc.change(t, f)
			tc.same(t, before, Stat(f))
			assert.True(t, strings.HasPrefix(h.next(), "v2"), "the new content is in use")
			assert.Equal(t, []bool{false, true}, h.reloads)
		})
	}
}

// A change of mode or owner alone (chmod, chown: content, times and
// inode stay) is a change too: whether a file may be trusted depends on
// them, so the load that decides it must run again.
func TestModeOrOwnerChangeReloads(t *testing.T) {
	f := fileIn(t, "a")
	h := newHarness(t, []string{f}, "v1")
	before := Stat(f)
	require.NoError(t, os.Chmod(f, 0o666))
	after := Stat(f)
	require.Equal(t, before.size, after.size)
	require.Equal(t, before.mtime, after.mtime)
	require.Equal(t, before.ino, after.ino)
	h.next()
	assert.Equal(t, []bool{false, true}, h.reloads, "chmod reloads")

	if os.Geteuid() != 0 {
		return
	}
	require.NoError(t, os.Chown(f, 4242, 4242))
	h.next()
	assert.Equal(t, []bool{false, true, true}, h.reloads, "chown reloads")
}

func modTime(t *testing.T, path string) time.Time {
	t.Helper()
	fi, err := os.Stat(path)
	require.NoError(t, err)
	return fi.ModTime()
}

// A Kubernetes secret volume: tls.crt -> ..data/tls.crt, ..data ->
// ..<timestamp>. An update writes a new timestamped directory and renames a
// new ..data link over the old one; the file's own symlink never changes.
func TestKubernetesDataSymlinkSwap(t *testing.T) {
	dir := t.TempDir()
	version := func(name, content string, mtime time.Time) {
		require.NoError(t, os.Mkdir(filepath.Join(dir, name), 0o700))
		f := filepath.Join(dir, name, "tls.crt")
		writeFile(t, f, content)
		require.NoError(t, os.Chtimes(f, mtime, mtime))
		require.NoError(t, os.Symlink(name, filepath.Join(dir, "..data_tmp")))
		require.NoError(t, os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")))
	}
	mtime := time.Now().Add(-time.Hour).Truncate(time.Second)
	version("..2026_01_01_00_00_00.1", "v1", mtime)
	path := filepath.Join(dir, "tls.crt")
	require.NoError(t, os.Symlink(filepath.Join("..data", "tls.crt"), path))
	h := newHarnessOn(t, []string{path})
	assert.Equal(t, "v1", h.w.Current())
	linkBefore, err := os.Lstat(path)
	require.NoError(t, err)

	// Same size and time: only the file the links lead to is another one.
	version("..2026_02_01_00_00_00.2", "v2", mtime)
	require.NoError(t, os.RemoveAll(filepath.Join(dir, "..2026_01_01_00_00_00.1")))
	linkAfter, err := os.Lstat(path)
	require.NoError(t, err)
	require.True(t, os.SameFile(linkBefore, linkAfter), "the file's own link is untouched")
	assert.Equal(t, "v2", h.next())
}

// Any of the files changing reloads all of them.
func TestChangeOfAnyFileReloads(t *testing.T) {
	a, b := fileIn(t, "a"), fileIn(t, "b")
	h := newHarness(t, []string{a, b}, "a1", "b1")
	assert.Equal(t, "a1+b1", h.w.Current())
	replaceFile(t, b, "b2")
	assert.Equal(t, "a1+b2", h.next(), "the second file alone changed")
	replaceFile(t, a, "a2")
	assert.Equal(t, "a2+b2", h.next())
}

func TestBrokenChangeKeepsPreviousAndWarnsOnce(t *testing.T) {
	for _, tc := range []struct {
		name   string
		break_ func(t *testing.T, path string)
		reason string
	}{
		{"unusable content", func(t *testing.T, path string) { replaceFile(t, path, "broken") }, errBroken.Error()},
		{"removed", func(t *testing.T, path string) { require.NoError(t, os.Remove(path)) }, "no such file or directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := fileIn(t, "a")
			h := newHarness(t, []string{f}, "v1")

			tc.break_(t, f)
			for range 3 {
				assert.Equal(t, "v1", h.next(), "the previous material stays in use")
			}
			require.Len(t, h.rejected, 1, "one rejection per change")
			assert.ErrorContains(t, h.rejected[0], tc.reason)
			assert.Len(t, h.logs.Lines("[WARN]"), 1, h.logs.String())
			assert.Len(t, h.logs.Lines("[WARN]", warnMsg, tc.reason), 1, h.logs.String())
			assert.EqualValues(t, 2, h.loads.Load(), "a broken change is read once, not on every look")
			assert.Equal(t, []string{"v1"}, h.adopted)

			// Fixed: adopted at the next look.
			replaceFile(t, f, "v2")
			assert.Equal(t, "v2", h.next())
			assert.Equal(t, []string{"v1", "v2"}, h.adopted)
			assert.Equal(t, []bool{false, true}, h.reloads)
			assert.Len(t, h.rejected, 1)
			assert.Len(t, h.logs.Lines("[WARN]"), 1)
		})
	}
}

// Each broken change is tried and reported once; a pair written as two
// files is adopted once both are there.
func TestEachBrokenChangeIsTriedAgain(t *testing.T) {
	cert, key := fileIn(t, "cert"), fileIn(t, "key")
	h := newHarness(t, []string{cert, key}, "c1", "k1")

	replaceFile(t, cert, "broken: c2 without its key")
	assert.Equal(t, "c1+k1", h.next())
	replaceFile(t, cert, "broken: c2, written again")
	assert.Equal(t, "c1+k1", h.next())
	assert.Equal(t, "c1+k1", h.next())
	require.Len(t, h.rejected, 2, "one per change")
	assert.Len(t, h.logs.Lines("[WARN]", warnMsg), 2, h.logs.String())

	replaceFile(t, cert, "c2")
	replaceFile(t, key, "broken: k2 half written")
	assert.Equal(t, "c1+k1", h.next())
	require.Len(t, h.rejected, 3)
	replaceFile(t, key, "k2")
	assert.Equal(t, "c2+k2", h.next(), "adopted once both files are usable")
	assert.Equal(t, []string{"c1+k1", "c2+k2"}, h.adopted)
}

// The files are stat'ed before they are read, so a change that lands while
// they are being read is picked up by the next look rather than missed.
func TestChangeDuringLoadIsNoticedNextLook(t *testing.T) {
	f := fileIn(t, "a")
	writeFile(t, f, "v1")
	clk := fakeclock.New(t0)
	sneak := "" // content written right after the next read, under the watcher's lock
	w, err := New(Config[string]{
		Files: []string{f},
		Load: func() (string, error) {
			v, err := load([]string{f})
			if sneak != "" {
				replaceFile(t, f, sneak)
				sneak = ""
			}
			return v, err
		},
		Interval: interval,
		Now:      clk.Now,
	})
	require.NoError(t, err)
	sneak = "v2"
	clk.Advance(interval)
	replaceFile(t, f, "v1.5")
	require.Equal(t, "v1.5", w.Current(), "the reload read v1.5; v2 arrived after it was read")
	clk.Advance(interval)
	assert.Equal(t, "v2", w.Current())

	// The same at the first load.
	g := fileIn(t, "b")
	writeFile(t, g, "w1")
	first := true
	w2, err := New(Config[string]{
		Files: []string{g},
		Load: func() (string, error) {
			v, err := load([]string{g})
			if first {
				first = false
				replaceFile(t, g, "w2")
			}
			return v, err
		},
		Interval: interval,
		Now:      clk.Now,
	})
	require.NoError(t, err)
	assert.Equal(t, "w1", w2.Current())
	clk.Advance(interval)
	assert.Equal(t, "w2", w2.Current())
}

// Current is safe for concurrent use while the files change and the clock
// moves: Load and Adopted never run concurrently, every use gets material
// that was adopted, and the last version is the one in use at the end.
func TestConcurrentUse(t *testing.T) {
	f := fileIn(t, "a")
	writeFile(t, f, "v0")
	clk := fakeclock.New(t0)
	var inLoad, inAdopted, overlaps atomic.Int32
	var mu sync.Mutex
	adopted := map[string]bool{}
	w, err := New(Config[string]{
		Files: []string{f},
		Load: func() (string, error) {
			if inLoad.Add(1) > 1 {
				overlaps.Add(1)
			}
			defer inLoad.Add(-1)
			return load([]string{f})
		},
		Adopted: func(v string, _ bool) {
			if inAdopted.Add(1) > 1 {
				overlaps.Add(1)
			}
			defer inAdopted.Add(-1)
			mu.Lock()
			adopted[v] = true
			mu.Unlock()
		},
		Interval: time.Millisecond,
		Now:      clk.Now,
	})
	require.NoError(t, err)

	const versions = 50
	done := make(chan struct{})
	var wg sync.WaitGroup
	seen := make([]map[string]bool, 8)
	for i := range seen {
		seen[i] = map[string]bool{}
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				seen[i][w.Current()] = true
				clk.Advance(time.Millisecond)
			}
		})
	}
	for v := 1; v <= versions; v++ {
		replaceFile(t, f, fmt.Sprintf("v%d", v))
	}
	// Versions of one size written faster than the file system clock ticks
	// may reuse an inode freed a moment before and look alike; the last one
	// differs in size, so it is noticed whatever the timing.
	want := "the last version"
	replaceFile(t, f, want)
	require.Eventually(t, func() bool { return w.Current() == want }, 30*time.Second, time.Millisecond)
	close(done)
	wg.Wait()

	assert.Zero(t, overlaps.Load(), "Load and Adopted never run concurrently")
	mu.Lock()
	defer mu.Unlock()
	for i, s := range seen {
		for v := range s {
			assert.True(t, adopted[v], "goroutine %d got %q, which was never adopted", i, v)
		}
	}
	clk.Advance(time.Millisecond)
	assert.Equal(t, want, w.Current())
}
