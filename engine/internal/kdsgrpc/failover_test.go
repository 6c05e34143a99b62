package kdsgrpc

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/kds-engine/kds-engine/engine/internal/mux"
	kdsv1 "github.com/kds-engine/kds-engine/proto/kds/v1"
)

func TestParseAddresses(t *testing.T) {
	got, err := ParseAddresses(" g1:5685, g2:5685 ,[::1]:5685,10.0.0.1:1")
	require.NoError(t, err)
	assert.Equal(t, []string{"g1:5685", "g2:5685", "[::1]:5685", "10.0.0.1:1"}, got)

	for _, tc := range []struct{ in, want string }{
		{"", `empty: want HOST:PORT`},
		{"g1:5685,,g2:5685", `entry 2 of "g1:5685,,g2:5685" is empty`},
		{"g1:5685,", `entry 2 of "g1:5685," is empty`},
		{"g1", `"g1": missing port: want HOST:PORT such as g1:5685`},
		{"g1:5685,g2", `entry 2 ("g2"): missing port`},
		{"g1:http", `"g1:http": port "http" is not a number from 1 to 65535`},
		{"g1:0", `port "0" is not a number from 1 to 65535`},
		{"g1:65536", `port "65536" is not a number from 1 to 65535`},
		{":5685", `":5685": no host`},
		{"::1:5685", `IPv6 in brackets as in [::1]:5685`},
		{"g1:5685,g2:5685,G1:5685", `entry 3 ("G1:5685") repeats entry 1`},
	} {
		_, err := ParseAddresses(tc.in)
		require.Error(t, err, tc.in)
		assert.ErrorIs(t, err, ErrInvalidAddress, tc.in)
		assert.Contains(t, err.Error(), tc.want, tc.in)
	}
}

func TestCandidatesResolveNamesAndRotate(t *testing.T) {
	resolve := func(_ context.Context, host string) ([]string, error) {
		switch host {
		case "global.example":
			return []string{"10.0.0.1", "fd00::2", "10.0.0.1"}, nil
		case "gone.example":
			return nil, errors.New("no such host")
		}
		return nil, errors.New("unexpected lookup of " + host)
	}
	cs, err := candidates(context.Background(), []string{"global.example:5685", "10.0.0.9:5685", "gone.example:1", "[fd00::2]:5685"}, resolve, "")
	require.Error(t, err)
	// Worded like a failed attempt ("global at ENTRY: …"), since it is shown
	// as one (/readyz: "not connected to global at …").
	assert.Contains(t, err.Error(), "global at gone.example:1: cannot resolve gone.example: no such host")
	assert.Contains(t, err.Error(), "check the host name in --global")
	assert.Equal(t, []candidate{
		{addr: "10.0.0.1:5685", entry: "global.example:5685", serverName: "global.example"},
		{addr: "[fd00::2]:5685", entry: "global.example:5685", serverName: "global.example"},
		{addr: "10.0.0.9:5685", entry: "10.0.0.9:5685", serverName: "10.0.0.9"},
	}, cs, "a name counts as each address it resolves to, verified against the name; an address is kept once")
	assert.Equal(t, "global.example:5685 (10.0.0.1:5685)", cs[0].label())
	assert.Equal(t, "10.0.0.9:5685", cs[2].label())

	cs, err = candidates(context.Background(), []string{"global.example:5685", "10.0.0.9:5685"}, resolve, "kds.example")
	require.NoError(t, err)
	for _, c := range cs {
		assert.Equal(t, "kds.example", c.serverName, "the override applies to every address")
	}

	addrs := func(cs []candidate) (out []string) {
		for _, c := range cs {
			out = append(out, c.addr)
		}
		return out
	}
	three := []candidate{{addr: "a"}, {addr: "b"}, {addr: "c"}}
	assert.Equal(t, []string{"a", "b", "c"}, addrs(rotateAfter(three, "")))
	assert.Equal(t, []string{"c", "a", "b"}, addrs(rotateAfter(three, "b")), "the address that just failed comes last")
	assert.Equal(t, []string{"a", "b", "c"}, addrs(rotateAfter(three, "c")))
	assert.Equal(t, []string{"a", "b", "c"}, addrs(rotateAfter(three, "gone")))
}

// replica is one global serving KDS on loopback that a test can stop.
type replica struct {
	addr string
	stop func()
}

// startReplica serves a Global whose sessions last until they end, on
// listen's address ("127.0.0.1:0" for a new port). Stopped at cleanup.
func startReplica(t *testing.T, listen string) *replica {
	t.Helper()
	g := NewGlobal(1, func(ctx context.Context, _ string, _ *mux.Session) error {
		<-ctx.Done()
		return nil
	})
	lis, err := net.Listen("tcp", listen)
	require.NoError(t, err)
	srv := NewServer(Config{})
	kdsv1.RegisterKDSServer(srv, g)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	var once sync.Once
	r := &replica{addr: lis.Addr().String(), stop: func() {
		once.Do(func() {
			srv.Stop()
			<-done
			g.Wait()
		})
	}}
	t.Cleanup(r.stop)
	return r
}

// deadAddr is a loopback address nothing listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := lis.Addr().String()
	require.NoError(t, lis.Close())
	return addr
}

// attemptLog records the Dialer's attempts.
type attemptLog struct {
	mu    sync.Mutex
	addrs []string
	times []time.Time
}

func (l *attemptLog) option() Option {
	return func(s *settings) {
		s.onAttempt = func(addr string) {
			l.mu.Lock()
			defer l.mu.Unlock()
			l.addrs, l.times = append(l.addrs, addr), append(l.times, time.Now())
		}
	}
}

func (l *attemptLog) snapshot() ([]string, []time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.addrs...), append([]time.Time(nil), l.times...)
}

func waitingZone(ctx context.Context, _ *mux.Session) error {
	<-ctx.Done()
	return nil
}

// A backoff so long that a test that reaches a replica in time proves the
// Dialer did not wait for it.
var noWait = WithBackoff(Backoff{Base: time.Hour, Cap: time.Hour})

// The first address is dead: the zone connects to the second at once.
func TestDialerSkipsDeadAddress(t *testing.T) {
	dead, live := deadAddr(t), startReplica(t, "127.0.0.1:0")
	var log attemptLog
	d := NewDialer([]string{dead, live.addr}, "zone-1", 1, waitingZone, insecureDial(), noWait, log.option())
	runDialer(t, d)
	eventually(t, func() bool { return d.State().Connected }, "connected to the live replica")
	st := d.State()
	assert.Equal(t, live.addr, st.Address)
	assert.Equal(t, live.addr, st.AddressEntry)
	assert.Equal(t, 1, st.Sessions)
	require.Error(t, st.LastError, "the dead address's failure is kept")
	assert.Contains(t, st.LastError.Error(), "global at "+dead+": open stream")
	addrs, _ := log.snapshot()
	assert.Equal(t, []string{dead, live.addr}, addrs)
}

// A live session on replica 1; replica 1 stops: the zone resumes on
// replica 2 without waiting for its backoff.
func TestDialerFailsOverWhenReplicaStops(t *testing.T) {
	r1, r2 := startReplica(t, "127.0.0.1:0"), startReplica(t, "127.0.0.1:0")
	var mu sync.Mutex
	var started, ended []string
	hooks := WithSessionHooks(func(ev SessionEvent) {
		mu.Lock()
		started = append(started, ev.Address)
		mu.Unlock()
	}, func(ev SessionEvent) {
		mu.Lock()
		ended = append(ended, ev.Address)
		mu.Unlock()
	})
	d := NewDialer([]string{r1.addr, r2.addr}, "zone-1", 1, waitingZone, insecureDial(), noWait, hooks)
	runDialer(t, d)
	eventually(t, func() bool { return d.State().Connected }, "connected to replica 1")
	assert.Equal(t, r1.addr, d.State().Address)

	r1.stop()
	eventually(t, func() bool { st := d.State(); return st.Connected && st.Sessions == 2 }, "resumed on replica 2")
	st := d.State()
	assert.Equal(t, r2.addr, st.Address)
	require.Error(t, st.LastError)
	assert.Contains(t, st.LastError.Error(), "global at "+r1.addr, "the error names the replica that was lost")
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, []string{r1.addr, r2.addr}, started)
	assert.Equal(t, []string{r1.addr}, ended)
}

// Every address dead: each round tries each address once, the rounds are
// spaced by a growing backoff, and a replica that comes back is found.
func TestDialerBacksOffWhileAllDeadAndFindsReturningReplica(t *testing.T) {
	a, b := deadAddr(t), deadAddr(t)
	var log attemptLog
	base := 100 * time.Millisecond
	d := NewDialer([]string{a, b}, "zone-1", 1, waitingZone, insecureDial(), log.option(),
		WithBackoff(Backoff{Base: base, Cap: 4 * base}))
	runDialer(t, d)
	eventually(t, func() bool { addrs, _ := log.snapshot(); return len(addrs) >= 10 }, "five rounds")
	addrs, times := log.snapshot()
	for i := 0; i+1 < 10; i += 2 {
		assert.Equal(t, []string{a, b}, addrs[i:i+2], "round %d tries each address once, in order", i/2)
	}
	// Before round r (r ≥ 1) the Dialer waits Delay(r-1), at least half of
	// min(Cap, Base·2^(r-1)): 50, 100, 200, 200 ms. Lower bounds only.
	for r := 1; r < 5; r++ {
		gap := times[2*r].Sub(times[2*r-1])
		want := min(base<<(r-1), 4*base) / 2
		assert.GreaterOrEqual(t, gap, want, "wait before round %d", r)
	}
	total := times[9].Sub(times[0])
	assert.GreaterOrEqual(t, total, 550*time.Millisecond, "ten attempts on dead replicas are spread out")

	back := startReplica(t, b)
	eventually(t, func() bool { return d.State().Connected }, "the replica that came back is found")
	assert.Equal(t, back.addr, d.State().Address)
}

// A session that lived longer than ResetAfter and ended on a single
// address is retried after Delay(0), not at once.
func TestDialerWaitsBeforeRetryingTheOnlyAddress(t *testing.T) {
	r := startReplica(t, "127.0.0.1:0")
	var log attemptLog
	var n int
	var mu sync.Mutex
	d := NewDialer([]string{r.addr}, "zone-1", 1, func(ctx context.Context, _ *mux.Session) error {
		mu.Lock()
		n++
		first := n == 1
		mu.Unlock()
		if first {
			select {
			case <-time.After(300 * time.Millisecond):
			case <-ctx.Done():
			}
		}
		return errors.New("session done")
	}, insecureDial(), log.option(), WithBackoff(Backoff{Base: 400 * time.Millisecond, Cap: time.Second, ResetAfter: 200 * time.Millisecond}))
	runDialer(t, d)
	eventually(t, func() bool { addrs, _ := log.snapshot(); return len(addrs) >= 2 }, "second attempt")
	_, times := log.snapshot()
	assert.GreaterOrEqual(t, times[1].Sub(times[0]), 300*time.Millisecond+200*time.Millisecond,
		"session (300ms), then Delay(0) ≥ 200ms before the same address again")
}

// The credentials for each address verify the entry's host, or the
// override.
func TestDialerServerNamePerAddress(t *testing.T) {
	live := startReplica(t, "127.0.0.1:0")
	_, port, err := net.SplitHostPort(live.addr)
	require.NoError(t, err)
	resolve := func(context.Context, string) ([]string, error) { return []string{"127.0.0.1"}, nil }
	for _, tc := range []struct{ override, want string }{{"", "global.example"}, {"kds.example", "kds.example"}} {
		var mu sync.Mutex
		var names []string
		credsFor := WithTransportCredentialsFor(func(name string) (credentials.TransportCredentials, error) {
			mu.Lock()
			names = append(names, name)
			mu.Unlock()
			return insecure.NewCredentials(), nil
		})
		ctx, cancel := context.WithCancel(context.Background())
		d := NewDialer([]string{"global.example:" + port}, "zone-1", 1, waitingZone, credsFor,
			WithServerName(tc.override), WithResolver(resolve), noWait)
		runDone := make(chan error, 1)
		go func() { runDone <- d.Run(ctx) }()
		eventually(t, func() bool { return d.State().Connected }, "connected")
		st := d.State()
		assert.Equal(t, live.addr, st.Address)
		assert.Equal(t, "global.example:"+port, st.AddressEntry)
		cancel()
		require.NoError(t, <-runDone)
		mu.Lock()
		assert.Equal(t, []string{tc.want}, names)
		mu.Unlock()
	}
}

// An address that accepts connections but never answers is given up after
// the connect timeout, and the zone moves on.
func TestDialerGivesUpOnSilentAddress(t *testing.T) {
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var wg sync.WaitGroup
	var cmu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			cmu.Lock()
			conns = append(conns, c)
			cmu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = silent.Close()
		wg.Wait()
		cmu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		cmu.Unlock()
	})
	live := startReplica(t, "127.0.0.1:0")
	d := NewDialer([]string{silent.Addr().String(), live.addr}, "zone-1", 1, waitingZone, insecureDial(), noWait,
		WithConnectTimeout(300*time.Millisecond))
	runDialer(t, d)
	eventually(t, func() bool { return d.State().Connected }, "connected to the live replica")
	st := d.State()
	assert.Equal(t, live.addr, st.Address)
	assert.ErrorIs(t, st.LastError, ErrConnectTimeout)
	assert.Contains(t, st.LastError.Error(), "global at "+silent.Addr().String())
}

func TestDialerRefusesBadAddressList(t *testing.T) {
	assert.ErrorIs(t, NewDialer(nil, "zone-1", 1, waitingZone).Run(context.Background()), ErrInvalidAddress)
	assert.ErrorIs(t, NewDialer([]string{"nohost"}, "zone-1", 1, waitingZone).Run(context.Background()), ErrInvalidAddress)
}

// A name with several addresses is several replicas: the zone tries each.
// A name that does not resolve is reported, and retried with backoff.
func TestDialerTriesEveryAddressOfAName(t *testing.T) {
	live := startReplica(t, "127.0.0.2:0") // all of 127/8 is loopback on Linux
	_, port, err := net.SplitHostPort(live.addr)
	require.NoError(t, err)
	var mu sync.Mutex
	lookups := 0
	resolve := func(_ context.Context, host string) ([]string, error) {
		mu.Lock()
		defer mu.Unlock()
		lookups++
		if lookups == 1 {
			return nil, errors.New("temporary failure in name resolution")
		}
		return []string{"127.0.0.1", "127.0.0.2"}, nil
	}
	var log attemptLog
	d := NewDialer([]string{"global.test:" + port}, "zone-1", 1, waitingZone, insecureDial(), log.option(),
		WithResolver(resolve), WithBackoff(Backoff{Base: 20 * time.Millisecond, Cap: 20 * time.Millisecond}))
	runDialer(t, d)
	eventually(t, func() bool { return d.State().Connected }, "connected to the name's second address")
	st := d.State()
	assert.Equal(t, live.addr, st.Address)
	assert.Equal(t, "global.test:"+port, st.AddressEntry)
	require.Error(t, st.LastError)
	assert.Contains(t, st.LastError.Error(), "global at global.test:"+port+" (127.0.0.1:"+port+"): open stream")
	addrs, _ := log.snapshot()
	assert.Equal(t, []string{"127.0.0.1:" + port, live.addr}, addrs)
	mu.Lock()
	assert.GreaterOrEqual(t, lookups, 2, "looked up again after the failure")
	mu.Unlock()
}

// Every address of a round fails, each for its own reason: the first
// replica is up but ends every session at once (its database is away, so
// it cannot claim the zone), the second is dead. The state's error (what
// /readyz and inspect sync show) names both, the most recent first, not
// only the dead one that happened to be tried last.
func TestDialerErrorNamesEveryAddressOfAFailedRound(t *testing.T) {
	refusing := serve(t, NewGlobal(1, func(context.Context, string, *mux.Session) error {
		return errors.New("claim zone zone-1: PostgreSQL at db:5432 database kds unavailable")
	}), Config{})
	dead := deadAddr(t)
	var log attemptLog
	d := NewDialer([]string{refusing, dead}, "zone-1", 1, waitingZone, insecureDial(), noWait, log.option())
	runDialer(t, d)
	eventually(t, func() bool {
		addrs, _ := log.snapshot()
		st := d.State()
		return len(addrs) == 2 && st.LastError != nil && strings.Contains(st.LastError.Error(), dead)
	}, "one round over both addresses")
	msg := d.State().LastError.Error()
	assert.Contains(t, msg, "global at "+dead+": open stream")
	assert.Contains(t, msg, "global at "+refusing+": ")
	assert.Contains(t, msg, "PostgreSQL at db:5432 database kds unavailable", "the cause on the replica that is up")
	assert.Less(t, strings.Index(msg, dead), strings.Index(msg, refusing), "the most recent first: %s", msg)
	assert.NotContains(t, msg, "\n", "one line, for the inspect sync table")
}
