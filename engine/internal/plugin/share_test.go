package plugin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/kds-engine/kds-engine/engine/internal/resource"
)

// fakeSends sends batches as a plugin would: it refuses every resource whose name starts
// with "bad", warns about every resource whose name starts with "old", and
// records what each call got. A call blocks while gate (when set before
// the call) is open.
type fakeSends struct {
	mu    sync.Mutex
	calls [][]string
	ctxs  []context.Context
	gates []chan struct{} // by call number; nil: no wait
	err   error           // returned by calls after the first, when set
	// poison, when set, fails every call that holds a resource whose name
	// starts with it, with poisonErr.
	poison    string
	poisonErr error
	shared    []bool // by call number: whether send was told it was shared
}

// sends returns the sharedSends of f, with no retries.
func (f *fakeSends) sends(spawn func(func(context.Context)) error) sharedSends {
	return sharedSends{
		send: func(ctx context.Context, rs []*resource.Resource, warnCtx func(int) context.Context, shared bool) (map[int][]resource.FieldError, error) {
			f.mu.Lock()
			f.shared = append(f.shared, shared)
			f.mu.Unlock()
			return f.send(ctx, rs, warnCtx)
		},
		spawn: spawn,
	}
}

// retrying returns the sharedSends of f that retry each caller alone,
// with f.send, after a shared call failed.
func (f *fakeSends) retrying(spawn func(func(context.Context)) error) sharedSends {
	ss := f.sends(spawn)
	ss.alone = func(ctx context.Context, rs []*resource.Resource, warnCtx func(int) context.Context, _ error) (map[int][]resource.FieldError, error) {
		return f.send(ctx, rs, warnCtx)
	}
	ss.retry = worthRetrying
	return ss
}

func (f *fakeSends) send(ctx context.Context, rs []*resource.Resource, warnCtx func(int) context.Context) (map[int][]resource.FieldError, error) {
	f.mu.Lock()
	n := len(f.calls)
	names := make([]string, len(rs))
	for i, r := range rs {
		names[i] = r.Name
	}
	f.calls = append(f.calls, names)
	f.ctxs = append(f.ctxs, ctx)
	var gate chan struct{}
	if n < len(f.gates) {
		gate = f.gates[n]
	}
	err := f.err
	if f.poison != "" {
		for _, r := range rs {
			if strings.HasPrefix(r.Name, f.poison) {
				err, n = f.poisonErr, 1
			}
		}
	}
	f.mu.Unlock()
	if gate != nil {
		<-gate
	}
	if err != nil && n > 0 {
		return nil, err
	}
	out := map[int][]resource.FieldError{}
	for i, r := range rs {
		if strings.HasPrefix(r.Name, "bad") {
			out[i] = []resource.FieldError{{Field: "spec", Message: r.Name}}
		}
		if strings.HasPrefix(r.Name, "old") {
			wc := ctx
			if warnCtx != nil {
				wc = warnCtx(i)
			}
			resource.AddWarnings(wc, r.Key(), []resource.FieldError{{Field: "spec", Message: "old"}})
		}
	}
	return out, nil
}

func (f *fakeSends) callNames() [][]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([][]string(nil), f.calls...)
}

// spawner starts the queued sends on goroutines the test joins.
type spawner struct {
	wg    sync.WaitGroup
	base  context.Context
	count atomic.Int32
}

func (sp *spawner) spawn(f func(context.Context)) error {
	sp.count.Add(1)
	sp.wg.Add(1)
	go func() {
		defer sp.wg.Done()
		f(sp.base)
	}()
	return nil
}

func named(names ...string) []*resource.Resource {
	rs := make([]*resource.Resource, len(names))
	for i, n := range names {
		rs[i] = &resource.Resource{Type: "T", Mesh: "m", Name: n, Spec: []byte(`{}`)}
	}
	return rs
}

// waitQueued waits until the queue of s holds n callers that have not
// left.
func waitQueued(t *testing.T, s *sharing, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := s.waitingCallers()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d callers queued, want %d", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}

type outcome struct {
	res map[int][]resource.FieldError
	err error
}

// leadersHeldHook is a call hook for tests of a shared call: while armed
// returns true, the first SharedCallsInFlight calls (the calls in flight
// the others queue behind) signal entered and wait for held to close, and
// the next one (the shared call) waits for leadersBack to close.
func leadersHeldHook(armed func() bool) (hook Option, entered <-chan struct{}, held, leadersBack chan struct{}) {
	held, leadersBack = make(chan struct{}), make(chan struct{})
	in := make(chan struct{}, SharedCallsInFlight)
	var count atomic.Int32
	hook = WithCallHook(func(int) {
		if !armed() {
			return
		}
		switch n := count.Add(1); {
		case n <= SharedCallsInFlight:
			in <- struct{}{}
			<-held
		case n == SharedCallsInFlight+1:
			<-leadersBack
		}
	})
	return hook, in, held, leadersBack
}

// startLeaders starts SharedCallsInFlight lone calls to plugin, call i
// validating lead(i), and returns once each has signalled entered (the
// test's call hook holds them there); their errors arrive on the channel.
func startLeaders(h *Host, plugin string, entered <-chan struct{}, lead func(i int) *resource.Resource) <-chan error {
	errs := make(chan error, SharedCallsInFlight)
	for i := range SharedCallsInFlight {
		go func() {
			_, err := h.ValidateBatch(context.Background(), plugin, []*resource.Resource{lead(i)})
			errs <- err
		}()
		<-entered
	}
	return errs
}

// queueCallers starts one ValidateBatch to plugin per batch, each once the
// one before it has queued behind the calls in flight, and returns the
// channels their outcomes arrive on, in the batches' order.
func queueCallers(t *testing.T, h *Host, m *managed, plugin string, batches ...[]*resource.Resource) []chan outcome {
	t.Helper()
	outs := make([]chan outcome, len(batches))
	for i, rs := range batches {
		outs[i] = make(chan outcome, 1)
		go func() {
			res, err := h.ValidateBatch(context.Background(), plugin, rs)
			outs[i] <- outcome{res, err}
		}()
		waitQueued(t, &m.share, i+1)
	}
	return outs
}

// goDo runs s.do for rs on a goroutine of the test and returns where its
// outcome arrives.
func goDo(s *sharing, ctx context.Context, rs []*resource.Resource, maxN int, f *fakeSends, sp *spawner) <-chan outcome {
	ch := make(chan outcome, 1)
	go func() {
		res, err := s.do(ctx, "p", rs, 10*len(rs), 1, maxN, 1<<20, f.sends(sp.spawn))
		ch <- outcome{res, err}
	}()
	return ch
}

func fe(name string) []resource.FieldError {
	return []resource.FieldError{{Field: "spec", Message: name}}
}

type ctxKey struct{}

// With no shared call in flight, a caller's batch goes at once, alone, on
// its own goroutine and with its own context: nothing is started, nothing
// waits.
func TestSharingLoneCallerGoesAtOnce(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	var s sharing
	f := &fakeSends{}
	spawn := func(func(context.Context)) error {
		t.Error("a lone caller must not start a goroutine")
		return nil
	}
	for round := range 2 {
		ctx := context.WithValue(context.Background(), ctxKey{}, round)
		res, err := s.do(ctx, "p", named("a", "bad"), 20, 1, 1000, 1<<20, f.sends(spawn))
		require.NoError(t, err)
		assert.Equal(t, map[int][]resource.FieldError{1: fe("bad")}, res)
		require.Len(t, f.ctxs, round+1)
		assert.Equal(t, round, f.ctxs[round].Value(ctxKey{}), "the call ran with the caller's context")
		assert.Zero(t, s.inFlight, "nothing in flight once it returned")
	}
	assert.Equal(t, [][]string{{"a", "bad"}, {"a", "bad"}}, f.callNames())
}

// Callers that arrive while a call is in flight go together in one call
// once it ends, in the order they arrived; each gets its own resources'
// results by its own indexes, and its own warnings.
func TestSharingJoinsCallersBehindTheCallInFlight(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	var s sharing
	gate := make(chan struct{})
	f := &fakeSends{gates: []chan struct{}{gate}}
	sp := &spawner{base: context.Background()}
	leader := goDo(&s, context.Background(), named("lead"), 1000, f, sp)
	waitCalls(t, f, 1)

	batches := [][]*resource.Resource{
		named("a1", "bad1"),
		named("bad2"),
		named("old3", "a3", "bad3"),
	}
	var outs []<-chan outcome
	var warns []*resource.Warnings
	for i, rs := range batches {
		ctx, w := resource.WithWarnings(context.Background())
		warns = append(warns, w)
		outs = append(outs, goDo(&s, ctx, rs, 1000, f, sp))
		waitQueued(t, &s, i+1)
	}
	close(gate)
	require.NoError(t, (<-leader).err)
	want := []map[int][]resource.FieldError{
		{1: fe("bad1")},
		{0: fe("bad2")},
		{2: fe("bad3")},
	}
	for i, ch := range outs {
		o := <-ch
		require.NoError(t, o.err)
		assert.Equal(t, want[i], o.res, "caller %d", i)
	}
	sp.wg.Wait()
	assert.Equal(t, [][]string{{"lead"}, {"a1", "bad1", "bad2", "old3", "a3", "bad3"}}, f.callNames(), "three callers, one call")
	assert.Empty(t, warns[0].List())
	assert.Empty(t, warns[1].List())
	require.Len(t, warns[2].List(), 1, "the warning reaches its own caller only")
	assert.Equal(t, "old3", warns[2].List()[0].Key.Name)
	assert.Zero(t, s.inFlight)
}

func waitCalls(t *testing.T, f *fakeSends, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for len(f.callNames()) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d calls, want %d", len(f.callNames()), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// A group holds at most maxN resources and maxBytes; a batch that does not
// fit starts the next group, which goes after it.
func TestSharingBoundsEachCall(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	var s sharing
	gate := make(chan struct{})
	f := &fakeSends{gates: []chan struct{}{gate}}
	sp := &spawner{base: context.Background()}
	leader := goDo(&s, context.Background(), named("lead"), 4, f, sp)
	waitCalls(t, f, 1)
	var outs []<-chan outcome
	for i, rs := range [][]*resource.Resource{
		named("a1", "a2", "a3"),
		named("b1", "b2"),
		named("c1", "bad-c2"),
		named("d1"),
	} {
		outs = append(outs, goDo(&s, context.Background(), rs, 4, f, sp))
		waitQueued(t, &s, i+1)
	}
	close(gate)
	require.NoError(t, (<-leader).err)
	for i, ch := range outs {
		o := <-ch
		require.NoError(t, o.err)
		if i == 2 {
			assert.Equal(t, map[int][]resource.FieldError{1: fe("bad-c2")}, o.res)
		} else {
			assert.Empty(t, o.res)
		}
	}
	sp.wg.Wait()
	assert.Equal(t, [][]string{{"lead"}, {"a1", "a2", "a3"}, {"b1", "b2", "c1", "bad-c2"}, {"d1"}}, f.callNames())
	assert.Equal(t, int32(1), sp.count.Load(), "one goroutine sent the queued groups one after the other")

	// Bytes: two batches of 60 do not fit 100.
	var s2 sharing
	gate2 := make(chan struct{})
	f2 := &fakeSends{gates: []chan struct{}{gate2}}
	sp2 := &spawner{base: context.Background()}
	do := func(rs []*resource.Resource) <-chan outcome {
		ch := make(chan outcome, 1)
		go func() {
			res, err := s2.do(context.Background(), "p", rs, 60, 1, 1000, 100, f2.sends(sp2.spawn))
			ch <- outcome{res, err}
		}()
		return ch
	}
	l2 := do(named("lead"))
	waitCalls(t, f2, 1)
	x := do(named("x"))
	waitQueued(t, &s2, 1)
	y := do(named("y"))
	waitQueued(t, &s2, 2)
	close(gate2)
	for _, ch := range []<-chan outcome{l2, x, y} {
		require.NoError(t, (<-ch).err)
	}
	sp2.wg.Wait()
	assert.Equal(t, [][]string{{"lead"}, {"x"}, {"y"}}, f2.callNames())
}

// A caller whose context ends returns at once with its context's error;
// the others' call goes on. Before its group went, its resources are left
// out; once it went, the call is cancelled only when every caller left.
func TestSharingCallerWhoseContextEndsLeavesAlone(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	var s sharing
	gate, gate2 := make(chan struct{}), make(chan struct{})
	f := &fakeSends{gates: []chan struct{}{gate, nil, gate2}}
	sp := &spawner{base: context.Background()}

	// Queued, not sent yet.
	leader := goDo(&s, context.Background(), named("lead"), 1000, f, sp)
	waitCalls(t, f, 1)
	xctx, xcancel := context.WithCancel(context.Background())
	x := goDo(&s, xctx, named("bad-x"), 1000, f, sp)
	waitQueued(t, &s, 1)
	y := goDo(&s, context.Background(), named("bad-y"), 1000, f, sp)
	waitQueued(t, &s, 2)
	xcancel()
	o := <-x // while the call in flight is still held
	require.ErrorIs(t, o.err, context.Canceled)
	assert.Equal(t, `validate with plugin "p": context canceled`, o.err.Error())
	close(gate)
	require.NoError(t, (<-leader).err)
	o = <-y
	require.NoError(t, o.err)
	assert.Equal(t, map[int][]resource.FieldError{0: fe("bad-y")}, o.res)
	sp.wg.Wait()
	assert.Equal(t, [][]string{{"lead"}, {"bad-y"}}, f.callNames(), "the caller that left is not sent")

	// Sent already: the third call (a lone one) holds on gate2, two
	// callers queue behind it and share the fourth, which holds on gate3.
	lead2 := goDo(&s, context.Background(), named("lead2"), 1000, f, sp)
	waitCalls(t, f, 3)
	f.mu.Lock()
	gate3 := make(chan struct{})
	f.gates = append(f.gates, gate3) // the shared call, the fourth, holds too
	f.mu.Unlock()
	pctx, pcancel := context.WithCancel(context.Background())
	qctx, qcancel := context.WithCancel(context.Background())
	p := goDo(&s, pctx, named("p1"), 1000, f, sp)
	waitQueued(t, &s, 1)
	q := goDo(&s, qctx, named("q1"), 1000, f, sp)
	waitQueued(t, &s, 2)
	close(gate2)
	require.NoError(t, (<-lead2).err)
	waitCalls(t, f, 4)
	f.mu.Lock()
	shared := f.ctxs[3]
	f.mu.Unlock()
	pcancel()
	require.ErrorIs(t, (<-p).err, context.Canceled)
	assert.NoError(t, shared.Err(), "one caller left: the call goes on for the other")
	qcancel()
	require.ErrorIs(t, (<-q).err, context.Canceled)
	select {
	case <-shared.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("every caller left, the call was not cancelled")
	}
	close(gate3)
	sp.wg.Wait()
	assert.Equal(t, []string{"p1", "q1"}, f.callNames()[3])
}

// A call that fails fails every caller in it with the same error; the
// call in flight before it is not affected.
func TestSharingFailureReachesEveryCaller(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	var s sharing
	gate := make(chan struct{})
	down := fmt.Errorf("validate: plugin %q exited during the call: %w", "p", ErrPluginDown)
	f := &fakeSends{gates: []chan struct{}{gate}, err: down}
	sp := &spawner{base: context.Background()}
	leader := goDo(&s, context.Background(), named("bad-lead"), 1000, f, sp)
	waitCalls(t, f, 1)
	var outs []<-chan outcome
	for i := range 3 {
		outs = append(outs, goDo(&s, context.Background(), named(fmt.Sprint("r", i)), 1000, f, sp))
		waitQueued(t, &s, i+1)
	}
	close(gate)
	o := <-leader
	require.NoError(t, o.err)
	assert.Equal(t, map[int][]resource.FieldError{0: fe("bad-lead")}, o.res)
	for _, ch := range outs {
		o := <-ch
		require.ErrorIs(t, o.err, ErrPluginDown)
		assert.Same(t, down, o.err, "the call's own error, unchanged")
	}
	sp.wg.Wait()
	assert.Len(t, f.callNames(), 2)

	// A host that closed starts nothing: the queued callers get why.
	var s2 sharing
	gate2 := make(chan struct{})
	f2 := &fakeSends{gates: []chan struct{}{gate2}}
	closed := fmt.Errorf("plugin host closed: %w", ErrPluginDown)
	refuse := func(func(context.Context)) error { return closed }
	l := make(chan error, 1)
	go func() {
		_, err := s2.do(context.Background(), "p", named("lead"), 10, 1, 1000, 1<<20, f2.sends(refuse))
		l <- err
	}()
	waitCalls(t, f2, 1)
	w := make(chan error, 1)
	go func() {
		_, err := s2.do(context.Background(), "p", named("w"), 10, 1, 1000, 1<<20, f2.sends(refuse))
		w <- err
	}()
	waitQueued(t, &s2, 1)
	close(gate2)
	require.NoError(t, <-l)
	assert.Same(t, closed, <-w)
	assert.Zero(t, s2.inFlight)
}

// retryingCaller returns a function that starts one caller of s, sending
// through f with retries of failed shared calls spawned by sp, and gives
// the channel its outcome arrives on.
func retryingCaller(s *sharing, f *fakeSends, sp *spawner) func(context.Context, []*resource.Resource) <-chan outcome {
	return func(ctx context.Context, rs []*resource.Resource) <-chan outcome {
		ch := make(chan outcome, 1)
		go func() {
			res, err := s.do(ctx, "p", rs, 10*len(rs), 1, 1000, 1<<20, f.retrying(sp.spawn))
			ch <- outcome{res, err}
		}()
		return ch
	}
}

// A shared call that fails sends each caller's batch again on a call of
// its own, one after the other: only the caller whose batch fails again
// gets an error, the others their own results and warnings. A call of one
// caller, or one that sent nothing, is not sent again.
func TestSharingRetriesEachCallerAloneAfterAFailedCall(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	var s sharing
	gate := make(chan struct{})
	crash := fmt.Errorf("validate: plugin %q exited during the call: %w", "p", ErrPluginDown)
	f := &fakeSends{gates: []chan struct{}{gate}, poison: "crash", poisonErr: crash}
	sp := &spawner{base: context.Background()}
	do := retryingCaller(&s, f, sp)
	leader := do(context.Background(), named("lead"))
	waitCalls(t, f, 1)
	actx, warns := resource.WithWarnings(context.Background())
	a := do(actx, named("a1", "old-a2"))
	waitQueued(t, &s, 1)
	b := do(context.Background(), named("b1", "crash-b2"))
	waitQueued(t, &s, 2)
	c := do(context.Background(), named("bad-c1"))
	waitQueued(t, &s, 3)
	close(gate)
	require.NoError(t, (<-leader).err)
	o := <-a
	require.NoError(t, o.err)
	assert.Empty(t, o.res)
	require.Len(t, warns.List(), 1, "the retry's warnings reach the caller")
	assert.Equal(t, "old-a2", warns.List()[0].Key.Name)
	o = <-b
	assert.Same(t, crash, o.err, "the caller whose batch fails again gets the error")
	o = <-c
	require.NoError(t, o.err)
	assert.Equal(t, map[int][]resource.FieldError{0: fe("bad-c1")}, o.res)
	sp.wg.Wait()
	assert.Equal(t, [][]string{{"lead"}, {"a1", "old-a2", "b1", "crash-b2", "bad-c1"}, {"a1", "old-a2"}, {"b1", "crash-b2"}, {"bad-c1"}}, f.callNames())
	assert.Equal(t, []bool{false, true}, f.shared, "the lone call is not shared, the group's is; the retries go alone")
	assert.Zero(t, s.inFlight)

	// One caller in the group: its error, no retry. Nothing sent (the
	// plugin not running): every caller gets the error, no retry.
	notRunning := notSent{fmt.Errorf("validate: plugin %q (down): %w", "p", ErrPluginDown)}
	for _, tc := range []struct {
		name    string
		callers []string
		err     error
	}{
		{"alone", []string{"crash-x"}, crash},
		{"not sent", []string{"crash-x", "y"}, notRunning},
	} {
		gate := make(chan struct{})
		f.mu.Lock()
		f.calls, f.ctxs, f.shared = nil, nil, nil
		f.gates, f.poisonErr = []chan struct{}{gate}, tc.err
		f.mu.Unlock()
		leader := do(context.Background(), named("lead"))
		waitCalls(t, f, 1)
		var outs []<-chan outcome
		for i, name := range tc.callers {
			outs = append(outs, do(context.Background(), named(name)))
			waitQueued(t, &s, i+1)
		}
		close(gate)
		require.NoError(t, (<-leader).err)
		for _, ch := range outs {
			assert.Equal(t, tc.err, (<-ch).err, tc.name)
		}
		sp.wg.Wait()
		assert.Len(t, f.callNames(), 2, "%s: not sent again", tc.name)
	}
}

// Callers may leave while their group's batches are sent again: a caller
// whose retry is in flight returns with its context's error and its retry
// is cancelled; one that left before its turn is not sent again; the
// others still get their own results.
func TestSharingCallersLeaveDuringRetries(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	var s sharing
	gate0, gate2 := make(chan struct{}), make(chan struct{})
	crash := fmt.Errorf("validate: plugin %q exited during the call: %w", "p", ErrPluginDown)
	// Calls: 0 the leader, 1 the shared one, 2 x's retry (held).
	f := &fakeSends{gates: []chan struct{}{gate0, nil, gate2}, poison: "crash", poisonErr: crash}
	sp := &spawner{base: context.Background()}
	do := retryingCaller(&s, f, sp)
	leader := do(context.Background(), named("lead"))
	waitCalls(t, f, 1)
	xctx, xcancel := context.WithCancel(context.Background())
	yctx, ycancel := context.WithCancel(context.Background())
	x := do(xctx, named("x1"))
	waitQueued(t, &s, 1)
	y := do(yctx, named("y1"))
	waitQueued(t, &s, 2)
	p := do(context.Background(), named("crash-p1"))
	waitQueued(t, &s, 3)
	z := do(context.Background(), named("bad-z1"))
	waitQueued(t, &s, 4)
	close(gate0)
	require.NoError(t, (<-leader).err)
	waitCalls(t, f, 3) // x's retry, held
	ycancel()
	require.ErrorIs(t, (<-y).err, context.Canceled, "y left before its turn")
	xcancel()
	require.ErrorIs(t, (<-x).err, context.Canceled, "x left during its retry")
	f.mu.Lock()
	xRetry := f.ctxs[2]
	f.mu.Unlock()
	select {
	case <-xRetry.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("x's retry was not cancelled when x left")
	}
	close(gate2)
	assert.Same(t, crash, (<-p).err)
	o := <-z
	require.NoError(t, o.err)
	assert.Equal(t, map[int][]resource.FieldError{0: fe("bad-z1")}, o.res)
	sp.wg.Wait()
	assert.Equal(t, [][]string{{"lead"}, {"x1", "y1", "crash-p1", "bad-z1"}, {"x1"}, {"crash-p1"}, {"bad-z1"}}, f.callNames(), "y is not sent again")
	assert.Zero(t, s.inFlight)
}

// Many callers at once, some leaving early: every caller that gets results
// gets exactly its own, and every call stays within the bounds.
func TestSharingManyCallersGetTheirOwnResults(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	var s sharing
	f := &fakeSends{}
	sp := &spawner{base: context.Background()}
	const callers, rounds, maxN = 40, 40, 7
	var wg sync.WaitGroup
	for c := range callers {
		wg.Go(func() {
			for r := range rounds {
				n := 1 + (c+r)%4
				names := make([]string, n)
				want := map[int][]resource.FieldError{}
				for i := range names {
					names[i] = fmt.Sprintf("c%d-r%d-%d", c, r, i)
					if (c+r+i)%3 == 0 {
						names[i] = "bad-" + names[i]
						want[i] = fe(names[i])
					}
				}
				ctx, cancel := context.WithCancel(context.Background())
				if (c*rounds+r)%5 == 0 {
					cancel() // leaves at once, or whenever it is its turn
				}
				res, err := s.do(ctx, "p", named(names...), 10*n, 2, maxN, 1<<20, f.sends(sp.spawn))
				cancel()
				if err != nil {
					assert.ErrorIs(t, err, context.Canceled)
					continue
				}
				assert.Equal(t, want, res)
			}
		})
	}
	wg.Wait()
	sp.wg.Wait()
	for _, call := range f.callNames() {
		assert.LessOrEqual(t, len(call), maxN)
	}
	assert.Zero(t, s.inFlight)
	assert.Empty(t, s.queue)
}

// holdFirstCalls returns a host option that holds the first n Validate
// RPCs until held is closed; entered gets one value as each is held.
func holdFirstCalls(n int) (held chan struct{}, entered chan struct{}, opt Option) {
	held, entered = make(chan struct{}), make(chan struct{}, n)
	var count atomic.Int32
	opt = func(h *Host) {
		h.beforeCall = func(int) {
			if count.Add(1) <= int32(n) {
				entered <- struct{}{}
				<-held
			}
		}
	}
	return held, entered, opt
}

// With two slots, a second caller goes at once while the first call is in
// flight; only a third waits, and goes when either call ends.
func TestSharingSlots(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	var s sharing
	g1, g2 := make(chan struct{}), make(chan struct{})
	f := &fakeSends{gates: []chan struct{}{g1, g2}}
	sp := &spawner{base: context.Background()}
	do := func(name string) <-chan outcome {
		ch := make(chan outcome, 1)
		go func() {
			res, err := s.do(context.Background(), "p", named(name), 10, 2, 1000, 1<<20, f.sends(sp.spawn))
			ch <- outcome{res, err}
		}()
		return ch
	}
	a := do("a")
	waitCalls(t, f, 1)
	b := do("bad-b")
	waitCalls(t, f, 2) // went at once: a is still held
	c := do("c")
	waitQueued(t, &s, 1)
	d := do("bad-d")
	waitQueued(t, &s, 2)
	close(g2)
	o := <-b
	require.NoError(t, o.err)
	assert.Equal(t, map[int][]resource.FieldError{0: fe("bad-b")}, o.res)
	for _, ch := range []<-chan outcome{c, d} {
		require.NoError(t, (<-ch).err)
	}
	close(g1)
	require.NoError(t, (<-a).err)
	sp.wg.Wait()
	assert.Equal(t, [][]string{{"a"}, {"bad-b"}, {"c", "bad-d"}}, f.callNames())
	assert.Zero(t, s.inFlight)
}

// With a real plugin process: callers that arrive while a call is in
// flight are served by one RPC, each with its own resources' errors and
// warnings, and Host.ValidateBatch's results are those of separate calls.
func TestSharedCallsWithARealPlugin(t *testing.T) {
	held, entered, hold := holdFirstCalls(SharedCallsInFlight)
	h, _ := startHost(t, pluginsDir(t, "warner"), hold)
	m := h.byName["warner"]
	require.NotNil(t, m)
	w := func(name, spec string) *resource.Resource { return res("WarnerThing", "m", name, spec) }

	lead := startLeaders(h, "warner", entered, func(i int) *resource.Resource { return w(fmt.Sprint("lead-", i), `{}`) })
	const sessions = 6
	outs := make([]chan outcome, sessions)
	warns := make([]*resource.Warnings, sessions)
	for i := range sessions {
		ctx, wc := resource.WithWarnings(context.Background())
		warns[i] = wc
		rs := []*resource.Resource{
			w(fmt.Sprint("ok-", i), `{"value":"new"}`),
			w(fmt.Sprint("bad-", i), `{"bad":true}`),
		}
		if i%2 == 0 {
			rs = append(rs, w(fmt.Sprint("old-", i), `{"value":"old"}`))
		}
		if i == 3 {
			rs = rs[:1] // all valid
		}
		outs[i] = make(chan outcome, 1)
		go func() {
			res, err := h.ValidateBatch(ctx, "warner", rs)
			outs[i] <- outcome{res, err}
		}()
		waitQueued(t, &m.share, i+1)
	}
	close(held)
	for range SharedCallsInFlight {
		require.NoError(t, <-lead)
	}
	badField := []resource.FieldError{{Field: "spec.bad", Message: "invalid value true: bad is set"}}
	for i := range sessions {
		o := <-outs[i]
		require.NoError(t, o.err, "caller %d", i)
		if i == 3 {
			assert.Empty(t, o.res, "caller %d", i)
		} else {
			assert.Equal(t, map[int][]resource.FieldError{1: badField}, o.res, "caller %d", i)
		}
		got := warns[i].List()
		if i%2 == 0 {
			require.Len(t, got, 1, "caller %d", i)
			assert.Equal(t, fmt.Sprint("old-", i), got[0].Key.Name)
		} else {
			assert.Empty(t, got, "caller %d", i)
		}
	}
	assert.Equal(t, int64(SharedCallsInFlight+1), info(t, h, "warner").Calls, "%d callers behind the calls in flight, one RPC", sessions)

	// Large batches do not wait for a shared call: they go at once.
	big := make([]*resource.Resource, DefaultBatchSize/2+1)
	for i := range big {
		big[i] = w(fmt.Sprint("big-", i), `{}`)
	}
	_, ok := h.shareable(big)
	assert.False(t, ok)
}

// A plugin that exits on every call: each caller of a shared RPC gets the
// error a call of its own gets (wrapping ErrPluginDown), from the shared
// RPC when it found the plugin down already, or from its own batch sent
// again alone once the plugin was back.
func TestSharedCallPluginCrashReachesEveryCaller(t *testing.T) {
	held, entered, hold := holdFirstCalls(SharedCallsInFlight)
	h, _ := startHost(t, pluginsDir(t, "crashvalidate"), hold, WithRestartBackoff(time.Millisecond, time.Millisecond))
	m := h.byName["crashvalidate"]
	require.NotNil(t, m)
	c := func(name string) *resource.Resource { return res("CrashvalidateThing", "m", name, `{}`) }
	lead := startLeaders(h, "crashvalidate", entered, func(i int) *resource.Resource { return c(fmt.Sprint("lead-", i)) })
	outs := make([]chan error, 3)
	for i := range outs {
		outs[i] = make(chan error, 1)
		go func() {
			_, err := h.ValidateBatch(context.Background(), "crashvalidate", []*resource.Resource{c(fmt.Sprint("r", i))})
			outs[i] <- err
		}()
		waitQueued(t, &m.share, i+1)
	}
	close(held)
	for range SharedCallsInFlight {
		require.ErrorIs(t, <-lead, ErrPluginDown)
	}
	for i := range outs {
		err := <-outs[i]
		require.ErrorIs(t, err, ErrPluginDown, "caller %d", i)
		assert.False(t, errors.Is(err, context.Canceled))
	}
}

// One zone's resource that makes the plugin exit fails only that zone's
// batch when the batches of several zones shared the RPC it was in: each
// batch goes again on an RPC of its own once the plugin is back, and the
// others get their results.
func TestSharedCallCrashFailsOnlyTheBatchThatCrashes(t *testing.T) {
	hook, entered, held, leadersBack := leadersHeldHook(func() bool { return true })
	h, _ := startHost(t, pluginsDir(t, "panicky"), hook, WithRestartBackoff(time.Millisecond, time.Millisecond))
	m := h.byName["panicky"]
	require.NotNil(t, m)
	p := func(name, spec string) *resource.Resource { return res("PanickyThing", "m", name, spec) }
	lead := startLeaders(h, "panicky", entered, func(i int) *resource.Resource { return p(fmt.Sprint("lead-", i), `{}`) })
	zoneA := []*resource.Resource{p("a-ok", `{"value":"fine"}`), p("a-bad", `{"bad":true}`)}
	zoneB := []*resource.Resource{p("b-ok", `{}`), p("b-poison", `{"value":"crash"}`)}
	outs := queueCallers(t, h, m, "panicky", [][]*resource.Resource{zoneA, zoneB}...)
	close(held)
	for range SharedCallsInFlight {
		require.NoError(t, <-lead)
	}
	close(leadersBack)

	a := <-outs[0]
	require.NoError(t, a.err, "zone A's batch shared the RPC that crashed; sent again alone, it passes")
	assert.Equal(t, map[int][]resource.FieldError{1: {{Field: "spec.bad", Message: "invalid value true: bad is set"}}}, a.res)
	b := <-outs[1]
	require.ErrorIs(t, b.err, ErrPluginDown, "zone B's batch crashes the plugin again")
	assert.Contains(t, b.err.Error(), "panic: cannot handle b-poison")
	waitRunning(t, h, "panicky", 2)
	assert.Equal(t, int64(SharedCallsInFlight+3), info(t, h, "panicky").Calls, "the shared RPC, then one for each zone")

	// Zone A's resources are not suspect (they go in one RPC as before);
	// zone B's are, and going alone they find the poison, which is then
	// refused without asking the plugin.
	for _, r := range zoneA {
		assert.False(t, m.isSuspect(fingerprint(r)), r.Name)
	}
	_, err := h.ValidateBatch(context.Background(), "panicky", zoneB)
	require.ErrorIs(t, err, ErrPluginDown, "b-poison, alone, crashes it once more")
	waitRunning(t, h, "panicky", 3)
	res, err := h.ValidateBatch(context.Background(), "panicky", zoneB)
	require.NoError(t, err)
	require.Len(t, res, 1)
	assert.Contains(t, res[1][0].Message, `plugin "panicky" exited while validating this resource`)
}

// A resource suspected from an earlier crash goes alone, as the only RPC in
// flight, also when it comes in a shared RPC: if it makes the plugin exit
// again it is recorded at once, and its caller's batch, sent again, gets
// the refusal as a result without another crash.
func TestSuspectInASharedCallIsRecordedOnItsProbe(t *testing.T) {
	var armed atomic.Bool
	hook, entered, held, leadersBack := leadersHeldHook(armed.Load)
	h, _ := startHost(t, pluginsDir(t, "panicky"), hook, WithRestartBackoff(time.Millisecond, time.Millisecond))
	m := h.byName["panicky"]
	require.NotNil(t, m)
	p := func(name, spec string) *resource.Resource { return res("PanickyThing", "m", name, spec) }
	poison := p("poison", `{"value":"crash"}`)
	_, err := h.ValidateBatch(context.Background(), "panicky", []*resource.Resource{p("other", `{}`), poison})
	require.ErrorIs(t, err, ErrPluginDown)
	require.True(t, m.isSuspect(fingerprint(poison)))
	waitRunning(t, h, "panicky", 1)

	armed.Store(true)
	lead := startLeaders(h, "panicky", entered, func(i int) *resource.Resource { return p(fmt.Sprint("lead-", i), `{}`) })
	outs := queueCallers(t, h, m, "panicky", [][]*resource.Resource{{p("a-ok", `{}`)}, {poison}}...)
	close(held)
	for range SharedCallsInFlight {
		require.NoError(t, <-lead)
	}
	close(leadersBack)
	a := <-outs[0]
	require.NoError(t, a.err)
	assert.Empty(t, a.res)
	b := <-outs[1]
	require.NoError(t, b.err, "recorded on its probe, the poison is refused without asking the plugin")
	require.Len(t, b.res, 1)
	assert.Contains(t, b.res[0][0].Message, `plugin "panicky" exited while validating this resource`)
	waitRunning(t, h, "panicky", 2)
	assert.Equal(t, 2, info(t, h, "panicky").Restarts, "one crash in the shared call, none after")
}

// A resource is blamed for a crash only when its RPC was the only one in
// flight to the plugin: a resource whose call was in flight when another
// call's resource made the plugin exit is not refused, only sent alone
// next time.
func TestCrashDuringAnotherCallBlamesNoOneElse(t *testing.T) {
	release := make(chan struct{})
	h, _ := startHost(t, pluginsDir(t, "panicky"), WithCallSharing(false), WithRestartBackoff(time.Millisecond, time.Millisecond))
	m := h.byName["panicky"]
	require.NotNil(t, m)
	inst, err := m.current()
	require.NoError(t, err)
	slow := res("PanickyThing", "m", "slow", `{"value":"slow"}`)
	poison := res("PanickyThing", "m", "poison", `{"value":"crash"}`)
	errs := make(chan error, 2)
	go func() {
		_, err := h.ValidateBatch(context.Background(), "panicky", []*resource.Resource{slow})
		errs <- err
	}()
	require.Eventually(t, func() bool { return m.active.Load() == 1 }, eventually, time.Millisecond, "the slow call in flight")
	go func() {
		<-release
		_, err := h.ValidateBatch(context.Background(), "panicky", []*resource.Resource{poison})
		errs <- err
	}()
	close(release)
	for range 2 {
		require.ErrorIs(t, <-errs, ErrPluginDown)
	}
	for _, r := range []*resource.Resource{slow, poison} {
		_, recorded := m.crashedOn(inst.binary, fingerprint(r))
		assert.False(t, recorded, "%s: two calls were in flight, either could have made it exit", r.Name)
		assert.True(t, m.isSuspect(fingerprint(r)), "%s: goes alone next time", r.Name)
	}
	waitRunning(t, h, "panicky", 1)
	_, err = h.ValidateBatch(context.Background(), "panicky", []*resource.Resource{poison})
	require.ErrorIs(t, err, ErrPluginDown, "alone, the poison crashes it once more")
	_, recorded := m.crashedOn(inst.binary, fingerprint(poison))
	assert.True(t, recorded)
}

// BenchmarkSharedValidateCalls measures what sharing RPCs saves when many
// callers validate small batches at once, as global's sync sessions do
// under churn: 100 callers each validate 20 batches of 3 resources of about
// 512 bytes with one plugin process, through a host with sharing on and
// one with it off, alternating which goes first. It reports, per resource
// validated, the CPU of this process and of the plugin process, and the
// RPCs, each side and as ratios on/off.
//
//	go test -run '^$' -bench SharedValidateCalls -benchtime 10x ./engine/internal/plugin
func BenchmarkSharedValidateCalls(b *testing.B) {
	const callers, rounds, per = 100, 20, 3
	log := hclog.NewNullLogger()
	on := NewHost(pluginsDir(b, "alpha"), log)
	off := NewHost(pluginsDir(b, "alpha"), log, WithCallSharing(false))
	for _, h := range []*Host{on, off} {
		require.NoError(b, h.Start(context.Background()))
		b.Cleanup(func() { require.NoError(b, h.Close()) })
	}
	pad := strings.Repeat("x", 480)
	batches := make([][]*resource.Resource, callers)
	for c := range batches {
		for i := range per {
			spec := fmt.Sprintf(`{"value":"v-%d-%d","pad":%q}`, c, i, pad)
			batches[c] = append(batches[c], res("AlphaOne", "default", fmt.Sprintf("r-%d-%d", c, i), spec))
		}
	}
	type totals struct {
		self, plugin time.Duration
		rpcs         int64
	}
	run := func(h *Host, into *totals) {
		p := info(b, h, "alpha")
		self0, plug0 := selfCPU(b), procCPU(b, p.PID)
		var wg sync.WaitGroup
		for c := range callers {
			wg.Go(func() {
				for range rounds {
					if _, err := h.ValidateBatch(context.Background(), "alpha", batches[c]); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		into.self += selfCPU(b) - self0
		into.plugin += procCPU(b, p.PID) - plug0
		into.rpcs += info(b, h, "alpha").Calls - p.Calls
	}
	var warm, son, soff totals
	run(on, &warm)
	run(off, &warm)
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if i%2 == 0 {
			run(on, &son)
			run(off, &soff)
		} else {
			run(off, &soff)
			run(on, &son)
		}
	}
	n := float64(b.N * callers * rounds * per)
	us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1000 / n }
	b.ReportMetric(us(son.self), "engine-us/res-shared")
	b.ReportMetric(us(soff.self), "engine-us/res-alone")
	b.ReportMetric(float64(son.self)/float64(soff.self), "engine-ratio")
	b.ReportMetric(us(son.plugin), "plugin-us/res-shared")
	b.ReportMetric(us(soff.plugin), "plugin-us/res-alone")
	b.ReportMetric(float64(son.plugin)/float64(soff.plugin), "plugin-ratio")
	b.ReportMetric(float64(son.rpcs)/n, "rpcs/res-shared")
	b.ReportMetric(float64(soff.rpcs)/n, "rpcs/res-alone")
}

// selfCPU is this process's user and system CPU time so far.
func selfCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	require.NoError(b, syscall.Getrusage(syscall.RUSAGE_SELF, &ru))
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procCPU is the user and system CPU time of process pid so far (Linux).
func procCPU(b *testing.B, pid int) time.Duration {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Skipf("no /proc: %v", err)
	}
	f := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+2:]))
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	require.NoError(b, errors.Join(err1, err2))
	return time.Duration(ut+st) * (time.Second / 100) // clock ticks (USER_HZ 100)
}

// The retries of a failed shared call end together within the budget (a
// call timeout, the restart wait included): a plugin that neither comes
// back nor answers makes each retry take up to a restart wait and a call
// timeout, and the last caller of a group of n waited n of them. Once the
// budget is spent the retry in flight is cancelled and every caller not
// answered yet gets the shared call's error, without being sent again.
func TestSharingRetriesEndWithinTheirBudget(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	var s sharing
	gate := make(chan struct{})
	crash := fmt.Errorf("validate: plugin %q exited during the call: %w", "p", ErrPluginDown)
	f := &fakeSends{gates: []chan struct{}{gate}, poison: "crash", poisonErr: crash}
	sp := &spawner{base: context.Background()}
	ss := f.retrying(sp.spawn)
	ss.budget = 50 * time.Millisecond
	// Each retry waits for a plugin that does not come back, until its
	// context ends.
	var retries atomic.Int32
	ss.alone = func(ctx context.Context, rs []*resource.Resource, _ func(int) context.Context, after error) (map[int][]resource.FieldError, error) {
		retries.Add(1)
		assert.Same(t, crash, after, "the retry is told the shared call's error")
		<-ctx.Done()
		return nil, fmt.Errorf("validate with plugin %q: %w", "p", context.Cause(ctx))
	}
	do := func(rs []*resource.Resource) <-chan outcome {
		ch := make(chan outcome, 1)
		go func() {
			res, err := s.do(context.Background(), "p", rs, 10*len(rs), 1, 1000, 1<<20, ss)
			ch <- outcome{res, err}
		}()
		return ch
	}
	leader := do(named("lead"))
	waitCalls(t, f, 1)
	var outs []<-chan outcome
	for i, name := range []string{"a", "crash-b", "c", "d"} {
		outs = append(outs, do(named(name)))
		waitQueued(t, &s, i+1)
	}
	close(gate)
	require.NoError(t, (<-leader).err)
	for i, ch := range outs {
		select {
		case o := <-ch:
			assert.Same(t, crash, o.err, "caller %d gets the shared call's error", i)
		case <-time.After(20 * time.Second):
			t.Fatalf("caller %d still waits for the retries", i)
		}
	}
	sp.wg.Wait()
	assert.EqualValues(t, 1, retries.Load(), "the callers after the budget ran out are not sent again")
	assert.Zero(t, s.inFlight)
}

// After a shared call that got no answer within the call timeout, each
// batch is sent again side by side with the plugin's other calls: a batch
// that hangs the plugin hangs its own RPC, and an exclusive retry would
// hold every other call to the plugin back for a call timeout. After the
// plugin went down, the retry is the only RPC in flight.
func TestRetryAfterATimeoutIsNotExclusive(t *testing.T) {
	h, _ := startHost(t, pluginsDir(t, "hangvalidate"), WithCallTimeout(200*time.Millisecond))
	m := h.byName["hangvalidate"]
	require.NotNil(t, m)
	// A call in flight to the plugin.
	gate := m.callGate()
	require.NoError(t, gate.Acquire(context.Background(), 1))
	defer gate.Release(1)
	rs := []*resource.Resource{res("HangvalidateThing", "m", "a", `{}`)}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	timeout := fmt.Errorf("validate with plugin %q: no answer within %s", "hangvalidate", h.callTimeout)
	_, err := h.retryAlone(ctx, "hangvalidate", m, rs, nil, timeout)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "no answer within 200ms", "sent beside the call in flight, and timed out itself")

	down := fmt.Errorf("validate: plugin %q exited during the call: %w", "hangvalidate", ErrPluginDown)
	sctx, scancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer scancel()
	_, err = h.retryAlone(sctx, "hangvalidate", m, rs, nil, down)
	require.ErrorIs(t, err, context.DeadlineExceeded, "waits for the call in flight to end")
	assert.EqualValues(t, 1, m.calls.Load(), "the exclusive retry was not sent")
}

// Close while the batches of a shared call that crashed the plugin wait to
// be sent again (for a restart that does not come before Close) ends the
// retries: every caller returns with the plugin-down error and no
// goroutine is left. While they wait, the callers count as waiting.
func TestCloseDuringRetriesEndsThem(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	hook, entered, held, leadersBack := leadersHeldHook(func() bool { return true })
	log, _ := testLogger(t)
	h := NewHost(pluginsDir(t, "panicky"), log, hook, WithRestartBackoff(time.Hour, time.Hour))
	require.NoError(t, h.Start(context.Background()))
	closed := false
	defer func() {
		if !closed {
			h.Close()
		}
	}()
	m := h.byName["panicky"]
	p := func(name, spec string) *resource.Resource { return res("PanickyThing", "m", name, spec) }
	lead := startLeaders(h, "panicky", entered, func(i int) *resource.Resource { return p(fmt.Sprint("lead-", i), `{}`) })
	outs := queueCallers(t, h, m, "panicky", [][]*resource.Resource{{p("a", `{}`)}, {p("b-poison", `{"value":"crash"}`)}}...)
	close(held)
	for range SharedCallsInFlight {
		require.NoError(t, <-lead)
	}
	close(leadersBack)
	// The shared call crashed the plugin; the first retry waits for the
	// restart, an hour away.
	require.Eventually(t, func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		return m.up != nil
	}, 20*time.Second, time.Millisecond)
	assert.Equal(t, 2, info(t, h, "panicky").Waiting, "both callers wait for their retries")
	require.NoError(t, h.Close())
	closed = true
	for i, ch := range outs {
		select {
		case o := <-ch:
			require.ErrorIs(t, o.err, ErrPluginDown, "caller %d", i)
		case <-time.After(20 * time.Second):
			t.Fatalf("caller %d still waits after Close", i)
		}
	}
	assert.Zero(t, info(t, h, "panicky").Waiting)
}
