package pgtest

import (
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
)

// Tests of several packages run at once, each package in its own process,
// and one of them (the CLI's end-to-end PostgreSQL restart) stops and
// starts the test server. So every test that uses the server holds a
// shared lock on a file in the temporary directory from NewDatabase until
// it ends, and a test that restarts the server holds it exclusively
// (Exclusive) for its whole run: the two never overlap, in one process or
// across processes (each lock opens the file anew, and flock locks of two
// open files conflict within a process too). A gate lock, taken briefly by
// the shared holders and for the whole wait by the exclusive one, keeps
// new shared holders from starving a waiting exclusive one.

var (
	ownerMu sync.Mutex
	owner   testing.TB // the test holding the exclusive lock, if any: its own NewDatabase does not wait for itself
)

func lockPath(name string) string {
	return filepath.Join(os.TempDir(), "kds-engine-test-postgres."+name)
}

// flock opens the lock file name and locks it (how: syscall.LOCK_SH or
// LOCK_EX), waiting as long as it takes; closing the file unlocks it.
func flock(t testing.TB, name string, how int) *os.File {
	t.Helper()
	f, err := os.OpenFile(lockPath(name), os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		t.Fatalf("open the PostgreSQL test lock: %v", err)
	}
	for {
		err = syscall.Flock(int(f.Fd()), how)
		if err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		f.Close()
		t.Fatalf("lock the PostgreSQL test lock: %v", err)
	}
	return f
}

// shared holds the server for t (shared with other tests) until t ends,
// unless t holds it exclusively.
func shared(t testing.TB) {
	ownerMu.Lock()
	mine := owner == t
	ownerMu.Unlock()
	if mine {
		return
	}
	gate := flock(t, "gate", syscall.LOCK_EX)
	f := flock(t, "lock", syscall.LOCK_SH)
	gate.Close()
	t.Cleanup(func() { f.Close() })
}

// Exclusive holds the test server for t alone until t ends: call it
// before anything that uses the server, in a test that stops or restarts
// it. It waits for the tests using the server, in every process, to end,
// and new ones wait for t. t's own NewDatabase calls do not wait.
func Exclusive(t testing.TB) {
	t.Helper()
	gate := flock(t, "gate", syscall.LOCK_EX)
	f := flock(t, "lock", syscall.LOCK_EX)
	ownerMu.Lock()
	owner = t
	ownerMu.Unlock()
	t.Cleanup(func() {
		ownerMu.Lock()
		owner = nil
		ownerMu.Unlock()
		f.Close()
		gate.Close()
	})
}
