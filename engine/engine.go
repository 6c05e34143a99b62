package engine

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/kds-engine/kds-engine/engine/apitypes"
	"github.com/kds-engine/kds-engine/engine/internal/guard"
	"github.com/kds-engine/kds-engine/engine/internal/httpauth"
	"github.com/kds-engine/kds-engine/engine/internal/insights"
	"github.com/kds-engine/kds-engine/engine/internal/kdsauth"
	"github.com/kds-engine/kds-engine/engine/internal/kdsgrpc"
	"github.com/kds-engine/kds-engine/engine/internal/kdssync"
	"github.com/kds-engine/kds-engine/engine/internal/metrics"
	"github.com/kds-engine/kds-engine/engine/internal/mux"
	"github.com/kds-engine/kds-engine/engine/internal/plugin"
	"github.com/kds-engine/kds-engine/engine/internal/resource"
	"github.com/kds-engine/kds-engine/engine/internal/store"
	"github.com/kds-engine/kds-engine/engine/internal/store/boltstore"
	"github.com/kds-engine/kds-engine/engine/internal/store/memory"
	"github.com/kds-engine/kds-engine/engine/internal/store/pgstore"
	"github.com/kds-engine/kds-engine/engine/internal/token"
	"github.com/kds-engine/kds-engine/engine/internal/validate"
	kdsv1 "github.com/kds-engine/kds-engine/proto/kds/v1"
)

// GlobalPeer is the insights name of a zone's connection to global.
const GlobalPeer = "global"

// apiShutdownGrace is how long a stopping engine lets admin API requests
// in flight finish before it cuts them.
const apiShutdownGrace = 5 * time.Second

// Engine is one running role. Create it with New, start it with Run. After
// Started is closed, the address methods report the bound listeners.
type Engine struct {
	cfg Config
	log hclog.Logger
	// hostOpts are added to the plugin host's options (tests only).
	hostOpts []plugin.Option

	started chan struct{}
	ins     *insights.Registry
	promReg *prometheus.Registry
	metrics *metrics.Metrics

	// Set by Run before Started is closed.
	host      *plugin.Host
	store     *guard.Store
	raw       store.Store // the store under guard, for its health
	validator *validate.Validator
	digests   map[string]string // type → schema digest, for types with a schema
	// pluginVersion reports the version of a plugin's running process
	// (the host's RunningVersion; tests may set another).
	pluginVersion func(plugin string) (string, bool)
	ix            *kdssync.Index
	server        *kdssync.Server
	served        []string
	received      []string
	kdsAddr       net.Addr
	apiAddr       net.Addr
	revoked       *revocations  // global
	live          *liveSessions // global: each zone's one live session
	// zoneToken is the zone's token file credentials (nil on global).
	zoneToken *kdsauth.TokenFileCredentials
	// fromGlobal remembers, on a zone, what it refused of global's
	// resources, across its sessions.
	fromGlobal *kdssync.Rejections
	// inflight budgets the bytes of responses in flight, all sessions;
	// inboundPool the bytes received and not yet handled, all sessions.
	inflight    *kdssync.Budget
	inboundPool *mux.InboundPool
	// admission (global) bounds the zones receiving their zone→global
	// initial state at once (decision 0041): cfg.InitialSyncSlots slots,
	// none if negative.
	admission *kdssync.Admission
	// testHookCheck, if set before Run (tests), runs before each
	// validation of a peer's resources received in a sync response, with
	// the peer's zone ("" on a zone).
	testHookCheck func(zone string)

	mu        sync.Mutex
	connected bool // zone: a session to global is up
	// revokedToken is, on a zone, the id of the token global named when it
	// ended a session as unauthenticated (a revocation).
	revokedToken string
	// dialer keeps the zone's session to global (nil on global, and on a
	// zone until it runs). Its state holds why an attempt was refused,
	// which no session hook sees: a refused attempt never starts a session.
	dialer *kdsgrpc.Dialer

	// observeSent, if set before Run (tests), is called with the encoded
	// size of every message sent to peer. It must be cheap and not block.
	observeSent func(peer string, bytes int)

	// testHookFeed, when set (by tests, before Run), runs each time the
	// index feed wakes up for new store events, before it handles them.
	testHookFeed func()
}

// New checks cfg, fills in defaults and returns an engine that is not yet
// running. logger must not be nil.
func New(cfg Config, logger hclog.Logger) (*Engine, error) {
	cfg = cfg.withDefaults()
	if err := cfg.check(); err != nil {
		return nil, err
	}
	promReg := prometheus.NewRegistry()
	promReg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m, err := metrics.New(promReg)
	if err != nil {
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	return &Engine{
		cfg:     cfg,
		log:     logger.Named(string(cfg.Role)),
		started: make(chan struct{}),
		ins:     insights.NewRegistry(),
		promReg: promReg,
		metrics: m,
	}, nil
}

func (c Config) withDefaults() Config {
	if c.Store == "" {
		c.Store = StoreBolt
	}
	if c.SendTimeout <= 0 {
		c.SendTimeout = time.Minute
	}
	if c.BufferHeadroom == 0 {
		c.BufferHeadroom = mux.DefaultHeadroom
	}
	if c.MaxMessageSize <= 0 {
		c.MaxMessageSize = mux.DefaultMaxMessageSize
	}
	if c.MaxResourceSize <= 0 {
		c.MaxResourceSize = 1 << 20
	}
	if c.KeepaliveTime <= 0 {
		c.KeepaliveTime = 10 * time.Second
	}
	if c.KeepaliveTimeout <= 0 {
		c.KeepaliveTimeout = 10 * time.Second
	}
	if c.ReconnectBackoffBase <= 0 {
		c.ReconnectBackoffBase = 500 * time.Millisecond
	}
	if c.ReconnectBackoffMax <= 0 {
		c.ReconnectBackoffMax = 30 * time.Second
	}
	if c.APIAddress == "" {
		if c.Role == RoleGlobal {
			c.APIAddress = DefaultGlobalAPIAddress
		} else {
			c.APIAddress = DefaultZoneAPIAddress
		}
	}
	if c.KDSAddress == "" && c.Role == RoleGlobal {
		c.KDSAddress = ":5685"
	}
	if c.SessionsPerMinute == 0 {
		c.SessionsPerMinute = 20
	}
	if c.MaxResourcesPerZoneType == 0 {
		c.MaxResourcesPerZoneType = 100000
	}
	if c.InboundPoolSize <= 0 {
		c.InboundPoolSize = mux.DefaultInboundPoolBytes
	}
	if c.Role == RoleGlobal && c.InitialSyncSlots == 0 {
		c.InitialSyncSlots = kdssync.AdmissionSlots(c.InboundPoolSize, c.MaxMessageSize)
	}
	if c.InitialSyncHold <= 0 {
		c.InitialSyncHold = kdssync.DefaultAdmissionHold
	}
	if c.InitialSyncIdle <= 0 {
		c.InitialSyncIdle = kdssync.DefaultAdmissionIdle
	}
	if c.Role == RoleGlobal && c.ReplicaID == "" {
		c.ReplicaID = DefaultReplicaID()
	}
	if c.LeaseHeartbeat <= 0 {
		c.LeaseHeartbeat = DefaultLeaseHeartbeat
	}
	if c.LeaseExpiry <= 0 {
		c.LeaseExpiry = DefaultLeaseExpiry
	}
	if c.APIMaxBodySize <= 0 {
		c.APIMaxBodySize = APIBodyResources*int64(c.MaxResourceSize) + APIBodyOverhead
	}
	return c
}

func (c Config) check() error {
	switch c.Role {
	case RoleGlobal:
	case RoleZone:
		if err := kdsgrpc.ValidateZoneName(c.ZoneName); err != nil {
			return fmt.Errorf("zone name: %w", err)
		}
		if c.GlobalAddress == "" {
			return errors.New("global address: required for a zone (HOST:PORT of global's KDS port)")
		}
		if _, err := ParseGlobalAddresses(c.GlobalAddress); err != nil {
			return fmt.Errorf("global address: %w", err)
		}
	default:
		return fmt.Errorf("role %q: want %q or %q", c.Role, RoleGlobal, RoleZone)
	}
	if c.Store == StoreBolt && c.DataDir == "" {
		return errors.New("data dir: required for the bolt store")
	}
	switch c.Store {
	case StoreBolt, StoreMemory:
	case StorePostgres:
		if c.Role != RoleGlobal {
			return errors.New("store postgres: only global runs on PostgreSQL (a zone keeps the bolt store)")
		}
		if c.PostgresURL == "" {
			return errors.New("store postgres: the PostgreSQL URL is required (--postgres-url or KDS_ENGINE_POSTGRES_URL)")
		}
	default:
		return fmt.Errorf("store %q: want %q, %q or %q", c.Store, StoreBolt, StorePostgres, StoreMemory)
	}
	if c.MaxMessageSize < kdsgrpc.MinAnnouncedMessageSize || c.MaxMessageSize > kdsgrpc.MaxAnnouncedMessageSize {
		return fmt.Errorf("max message size %d: must be from %d (64 KiB) to %d (64 MiB), the sizes a peer accepts when the session starts",
			c.MaxMessageSize, kdsgrpc.MinAnnouncedMessageSize, kdsgrpc.MaxAnnouncedMessageSize)
	}
	if c.MaxResourceSize > c.MaxMessageSize/2 {
		return fmt.Errorf("max resource size %d: must be at most half the max message size (%d)", c.MaxResourceSize, c.MaxMessageSize)
	}
	if minPool := int64(MinInboundPoolMessages) * int64(c.MaxMessageSize); c.InboundPoolSize < minPool {
		return fmt.Errorf("inbound pool size %d: must be at least %d × the max message size (%d): an honest response counts up to about 4 times its size in the pool, "+
			"and a smaller pool makes every session's receive loop wait behind each max-size one; raise it or lower the max message size",
			c.InboundPoolSize, MinInboundPoolMessages, minPool)
	}
	if c.InitialSyncIdle > c.InitialSyncHold {
		return fmt.Errorf("initial sync idle %s: must not be longer than the initial sync hold %s, which gives every slot back first", c.InitialSyncIdle, c.InitialSyncHold)
	}
	if c.ClusterID != "" {
		if err := token.ValidateClusterID(c.ClusterID); err != nil {
			return err
		}
	}
	if c.Role == RoleGlobal {
		if err := pgstore.CheckReplicaID(c.ReplicaID); err != nil {
			return fmt.Errorf("replica id: %w", err)
		}
	}
	if c.LeaseExpiry < 2*c.LeaseHeartbeat {
		return fmt.Errorf("lease expiry %s: must be at least twice the lease heartbeat interval %s", c.LeaseExpiry, c.LeaseHeartbeat)
	}
	return c.checkInsecure()
}

// ErrInsecureRemote is returned (wrapped) by New for Insecure with an
// address that is not loopback, unless InsecureAllowRemote is set.
var ErrInsecureRemote = errors.New("--insecure on a non-loopback address")

// checkInsecure refuses plaintext KDS beyond loopback unless explicitly
// allowed: zone tokens would cross the network readable by anyone on the
// path.
func (c Config) checkInsecure() error {
	if !c.Insecure || c.InsecureAllowRemote {
		return nil
	}
	addrs, what := []string{c.KDSAddress}, "the KDS address (--kds-addr)"
	if c.Role == RoleZone {
		addrs, _ = ParseGlobalAddresses(c.GlobalAddress)
		what = "global's address (--global)"
	}
	for _, addr := range addrs {
		if err := checkLoopback(addr, what); err != nil {
			return err
		}
	}
	return nil
}

// checkLoopback is checkInsecure for one address.
func checkLoopback(addr, what string) error {
	loopback, err := httpauth.IsLoopback(addr)
	if err != nil {
		return fmt.Errorf("%w: %s %q: %w", ErrInsecureRemote, what, addr, err)
	}
	if loopback {
		return nil
	}
	return fmt.Errorf("%w: %s %s is not a loopback address, and without TLS zone tokens cross the network in plaintext: "+
		"use TLS, or bind to 127.0.0.1 for local development, or set --insecure-allow-remote to accept that anyone on the path can read the tokens",
		ErrInsecureRemote, what, addr)
}

// Started is closed once Run has loaded the plugins, opened the store and
// bound its listeners.
func (e *Engine) Started() <-chan struct{} { return e.started }

// KDSAddr is global's bound KDS address (nil on a zone or before Started).
func (e *Engine) KDSAddr() net.Addr { return e.kdsAddr }

// APIAddr is the bound admin API address (nil before Started).
func (e *Engine) APIAddr() net.Addr { return e.apiAddr }

// Insights returns the sync state registry: this process's own sessions.
func (e *Engine) Insights() *insights.Registry { return e.ins }

// Zones returns global's zone status as GET /api/v1/zones shows it: with
// --store postgres, online and replica come from the session leases every
// replica shares (nil on a zone; call after Started).
func (e *Engine) Zones() []apitypes.Conn {
	if e.cfg.Role != RoleGlobal {
		return nil
	}
	return backend{e}.Insights()
}

// ReplicaID is this global replica's id (--replica-id; "" on a zone).
func (e *Engine) ReplicaID() string { return e.cfg.ReplicaID }

// Run runs the engine until ctx ends or a component fails, then shuts down
// in order: listeners, sessions, sync, plugins, store. It returns nil after
// a clean shutdown caused by ctx.
func (e *Engine) Run(ctx context.Context) error {
	log := e.log
	host := plugin.NewHost(e.cfg.PluginsDir, log, append([]plugin.Option{
		plugin.WithRequired(e.cfg.RequiredPlugins),
		plugin.WithHeadroom(e.cfg.BufferHeadroom),
		plugin.WithWindow(kdssync.DefaultWindow),
		plugin.WithValidationObserver(e.metrics.ObserveValidation)}, e.hostOpts...)...)
	if err := host.Start(ctx); err != nil {
		return fmt.Errorf("start plugins: %w", err)
	}
	defer host.Close()
	e.host = host

	raw, err := e.openStore(ctx)
	if err != nil {
		return err
	}
	defer raw.Close()
	e.raw = raw
	if e.cfg.Role == RoleGlobal && e.cfg.Store != StorePostgres {
		e.metrics.SetLeader(true) // the only replica does everything
	}
	role := guard.Global
	if e.cfg.Role == RoleZone {
		role = guard.Zone
	}
	reg := host.Registry()
	e.store = guard.New(raw, role, reg)
	e.validator, err = validate.New(reg, host, validate.WithMaxResourceSize(e.cfg.MaxResourceSize))
	if err != nil {
		return fmt.Errorf("compile type schemas: %w", err)
	}
	e.digests = schemaDigests(reg.Types())
	e.pluginVersion = host.RunningVersion

	owned := resource.GlobalToZone
	if e.cfg.Role == RoleZone {
		owned = resource.ZoneToGlobal
	}
	for _, td := range reg.Types() {
		if td.Direction == owned {
			e.served = append(e.served, td.Name)
		} else {
			e.received = append(e.received, td.Name)
		}
	}
	e.ix = kdssync.NewIndex(e.served)
	e.inflight = kdssync.NewBudget(kdssync.DefaultProcessBudget)
	e.inboundPool = mux.NewInboundPool(e.cfg.InboundPoolSize)
	if e.cfg.Role == RoleGlobal && e.cfg.InitialSyncSlots > 0 {
		slots := e.cfg.InitialSyncSlots
		e.admission = kdssync.NewAdmission(slots,
			kdssync.AdmissionHold(e.cfg.InitialSyncHold), kdssync.AdmissionIdle(e.cfg.InitialSyncIdle),
			// Bulk is a quarter of global's own size, not of what a
			// zone announces.
			kdssync.AdmissionMaxMessageSize(e.cfg.MaxMessageSize),
			// A full pool holds zones' responses before any session
			// sees them: that is global being slow, not a zone idle.
			kdssync.AdmissionBusy(e.inboundPool.Busy))
		log.Info("zone→global initial syncs at once", "slots", slots, "hold", e.cfg.InitialSyncHold, "idle", e.cfg.InitialSyncIdle,
			"inbound_pool", e.inboundPool.Limit(), "max_message_size", e.cfg.MaxMessageSize)
	}
	e.fromGlobal = kdssync.NewRejections()
	e.live = newLiveSessions(raw, log.Named("sessions"))
	e.server = kdssync.NewServer(e.ix,
		kdssync.WithServerBudget(e.inflight),
		kdssync.WithServerLogger(log.Named("kds-server")),
		kdssync.WithServerInsights(e.ins),
		kdssync.WithServerMaxMessageSize(e.cfg.MaxMessageSize),
		kdssync.WithServerWindow(kdssync.DefaultWindow))

	srv, apiTLS, err := e.apiServer(e.apiHandler())
	if err != nil {
		return err
	}
	var kdsSrvOpts []grpc.ServerOption
	var kdsDialOpts []grpc.DialOption
	var kdsCredsFor func(string) (credentials.TransportCredentials, error)
	if e.cfg.Role == RoleGlobal {
		kdsSrvOpts, err = e.kdsServerOptions()
	} else {
		kdsDialOpts, kdsCredsFor, err = e.kdsDialOptions()
	}
	if err != nil {
		return err
	}

	apiLis, err := net.Listen("tcp", e.cfg.APIAddress)
	if err != nil {
		return listenError("admin API", "--api-addr", e.cfg.APIAddress, err)
	}
	e.apiAddr = apiLis.Addr()
	apiLis = httpauth.LimitListener(apiLis, e.apiLimits())
	var kdsLis net.Listener
	if e.cfg.Role == RoleGlobal {
		kdsLis, err = net.Listen("tcp", e.cfg.KDSAddress)
		if err != nil {
			apiLis.Close()
			return listenError("KDS", "--kds-addr", e.cfg.KDSAddress, err)
		}
		e.kdsAddr = kdsLis.Addr()
	}

	parent := ctx
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	g, gctx := errgroup.WithContext(ctx)

	// The index follows the store's change feed: every write path (admin
	// API, sync) reaches peers the same way.
	feedReady := make(chan struct{})
	g.Go(func() error { return e.feedIndex(gctx, raw, feedReady) })
	select {
	case <-feedReady:
	case <-gctx.Done():
		apiLis.Close()
		if kdsLis != nil {
			kdsLis.Close()
		}
		return stopErr(parent, g.Wait())
	}

	g.Go(func() error {
		var err error
		if apiTLS != nil {
			err = srv.Serve(tls.NewListener(apiLis, apiTLS))
		} else {
			err = srv.Serve(apiLis)
		}
		if !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("admin API: %w", err)
		}
		return nil
	})
	g.Go(func() error { e.sampleEngine(gctx, 5*time.Second); return nil })
	g.Go(func() error { e.watchStoreHealth(gctx, raw); return nil })
	g.Go(func() error {
		<-gctx.Done()
		// Requests cut when the grace runs out are what a bounded stop
		// means (their clients get an error, the stop is clean); handlers
		// that ignore their cancelled request and outlive Run are not.
		st, err := srv.Stop(apiShutdownGrace)
		if st.Cut > 0 {
			e.log.Warn("admin API requests still running at shutdown were cut", "requests", st.Cut, "grace", apiShutdownGrace)
		}
		if err != nil {
			return fmt.Errorf("admin API: %w", err)
		}
		if st.Running > 0 {
			return fmt.Errorf("admin API: %d handlers still running %s after their requests were cut", st.Running, apiShutdownGrace)
		}
		return nil
	})

	tcfg := kdsgrpc.Config{
		MaxMessageSize:   e.cfg.MaxMessageSize,
		KeepaliveTime:    e.cfg.KeepaliveTime,
		KeepaliveTimeout: e.cfg.KeepaliveTimeout,
		SendTimeout:      e.cfg.SendTimeout,
		Headroom:         &e.cfg.BufferHeadroom,
		Window:           kdssync.DefaultWindow,

		InitialWindowSize: e.cfg.InitialWindowSize,
	}
	types := len(reg.Types())
	if e.cfg.Role == RoleGlobal {
		e.runGlobal(g, gctx, kdsLis, tcfg, types, kdsSrvOpts)
	} else {
		e.runZone(g, gctx, tcfg, types, kdsDialOpts, kdsCredsFor)
	}
	close(e.started)
	if w := e.cfg.InitialWindowSize; w > 0 {
		log.Info("KDS connection's HTTP/2 window is fixed (not grown with the link)", "bytes", w)
	}
	if e.cfg.Role == RoleGlobal {
		log.Info("running", "api", e.apiAddr, "kds", e.kdsAddr, "store", e.cfg.Store, "data_dir", e.cfg.DataDir, "replica", e.cfg.ReplicaID)
	} else {
		// A zone listens on no KDS address: it names the global it dials.
		log.Info("running", "api", e.apiAddr, "global", e.cfg.GlobalAddress, "store", e.cfg.Store, "data_dir", e.cfg.DataDir)
	}

	err = stopErr(parent, g.Wait())
	log.Info("stopped", "error", err)
	return err
}

// stopErr returns nil for an error that only reports the shutdown parent
// asked for: once parent has ended, a component that stops because of it
// (an error wrapping context.Canceled or parent's cause, such as a store
// watch ended by the shutdown signal) stopped cleanly, whichever component
// noticed first. Any other error is returned as it is.
func stopErr(parent context.Context, err error) error {
	if err == nil || parent.Err() == nil {
		return err
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.Cause(parent)) {
		return nil
	}
	return err
}

// ErrStoreUnavailable is wrapped by Run's error when the store's database
// (--store postgres) cannot be reached at start; the message names the
// server and the database. (Once running, the engine rides out the loss of
// its database instead of stopping.)
var ErrStoreUnavailable = store.ErrUnavailable

func (e *Engine) openStore(ctx context.Context) (store.Store, error) {
	switch e.cfg.Store {
	case StoreMemory:
		return memory.New(), nil
	case StorePostgres:
		s, err := pgstore.Open(ctx, e.cfg.PostgresURL, pgstore.WithLogger(e.log),
			pgstore.WithReplica(e.cfg.ReplicaID),
			pgstore.WithLeaseTimings(e.cfg.LeaseHeartbeat, e.cfg.LeaseExpiry),
			pgstore.WithLeaderHook(e.metrics.SetLeader))
		if err != nil {
			return nil, err
		}
		return s, nil
	}
	if err := boltstore.MoveMisplacedFile(e.cfg.DataDir, e.log); err != nil {
		return nil, fmt.Errorf("open store in %s: %w", e.cfg.DataDir, err)
	}
	s, err := boltstore.Open(e.cfg.DataDir, boltstore.WithLogger(e.log))
	if err != nil {
		return nil, fmt.Errorf("open store in %s: %w", e.cfg.DataDir, err)
	}
	return s, nil
}

// feedIndex loads the locally written resources into the index and then
// follows the change feed, without a gap. A watch that ends with
// store.ErrWatchLost (the store could not deliver some commits) is
// replaced: a new snapshot replaces the index's content, retried with
// backoff while the store is unavailable.
func (e *Engine) feedIndex(ctx context.Context, s store.Store, ready chan<- struct{}) error {
	w, items, _, err := store.SnapshotAndWatch(ctx, s, store.Filter{LocalOnly: true})
	if err != nil {
		return fmt.Errorf("watch store: %w", err)
	}
	e.watchServed(w)
	for _, r := range items {
		if err := e.ix.Put(r); err != nil {
			return err
		}
	}
	close(ready)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-w.Done():
			if ctx.Err() != nil {
				return nil // ended by the shutdown, like ctx
			}
			if !errors.Is(w.Err(), store.ErrWatchLost) {
				return fmt.Errorf("store watch ended: %w", w.Err())
			}
			e.log.Warn("store change feed lost commits: reloading the served resources", "why", w.Err())
			if w, err = e.resyncIndex(ctx, s); err != nil {
				return err
			}
			if w == nil {
				return nil // ctx ended
			}
			continue
		case <-w.C():
			if e.testHookFeed != nil {
				e.testHookFeed()
			}
			for _, ev := range w.Next() {
				if ev.Resource.Zone != "" {
					continue
				}
				if ev.Kind == store.EventDelete {
					e.ix.Delete(ev.Resource.Key())
				} else if err := e.ix.Put(ev.Resource); err != nil {
					return err
				}
			}
		}
	}
}

// watchServed restricts the index feed's watch w to commits of the served
// types: the index ignores every other type, and its goroutine would
// otherwise wake up for each of them — on a zone for every change global
// sends, on global for every status a zone sends — and compete for the
// processor with the sessions delivering them.
func (e *Engine) watchServed(w *store.Watch) {
	if len(e.served) > 0 {
		w.Only(e.served...)
	}
}

// resyncIndex takes a new snapshot and watch and replaces the index's
// content with the snapshot, retrying with backoff while the store fails.
// It returns a nil watch (and no error) if ctx ends first.
func (e *Engine) resyncIndex(ctx context.Context, s store.Store) (*store.Watch, error) {
	backoff := 100 * time.Millisecond
	for {
		w, items, _, err := store.SnapshotAndWatch(ctx, s, store.Filter{LocalOnly: true})
		if err == nil {
			e.watchServed(w)
			if err := e.ix.Replace(items); err != nil {
				return nil, err
			}
			return w, nil
		}
		if ctx.Err() != nil {
			return nil, nil
		}
		if errors.Is(err, store.ErrClosed) {
			return nil, fmt.Errorf("watch store: %w", err)
		}
		e.log.Warn("reload served resources: retrying", "error", err, "backoff", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, nil
		case <-t.C:
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// runSync runs both logical streams of one session: serving this side's
// types and applying the peer's. On global, fence ties the zone's writes to
// this session (nil on a zone); rej remembers what this side refused of the
// peer across sessions.
func (e *Engine) runSync(ctx context.Context, peer, zone string, sess *mux.Session, v kdssync.Validator, fence *store.Fence, rej *kdssync.Rejections) error {
	g, ctx := errgroup.WithContext(ctx)
	// The logical streams' Recv only returns when the session ends, so the
	// first failure (a store or plugin error in the client) must end the
	// session; otherwise the other half waits for it forever.
	stop := context.AfterFunc(ctx, func() { sess.Close(fmt.Errorf("sync: %w", context.Cause(ctx))) })
	defer stop()
	g.Go(func() error { e.sampleSession(ctx, peer, sess); return nil })
	// Responses never exceed the smaller of the two sides' max message
	// sizes (the session agreed on it from the peer's announcement).
	maxMsg := kdssync.WithSessionMaxMessageSize(sess.Params().MaxMessageSize)
	g.Go(func() error { return e.server.Serve(ctx, sess.Server(), peer, maxMsg) })
	g.Go(func() error {
		opts := []kdssync.ClientOption{
			kdssync.WithClientLogger(e.log.Named("kds-client")),
			kdssync.WithClientInsights(e.ins),
			kdssync.WithRejections(rej),
			kdssync.WithClientMaxMessageSize(sess.Params().MaxMessageSize),
			kdssync.WithResumeParts(kdsgrpc.PeerAcceptsResumeParts(ctx)),
			// Subscriptions in flight stay well within what the peer's
			// inbound queue holds, however many types resume at once.
			kdssync.WithPeerInboundBudget(sess.Params().PeerInboundBudget),
			// Global: zones' initial syncs at once stay within what the
			// shared inbound pool holds (nil on a zone).
			kdssync.WithAdmission(e.admission),
		}
		k := &sink{s: e.store, zone: zone, fence: fence}
		if e.testHookCheck != nil {
			v = hookedValidator{v, func() { e.testHookCheck(zone) }}
		}
		if e.cfg.Role == RoleGlobal {
			k.retried = e.applyRetried(zone)
		}
		if e.cfg.Role == RoleGlobal && e.cfg.MaxResourcesPerZoneType > 0 {
			opts = append(opts, kdssync.WithMaxResourcesPerType(e.cfg.MaxResourcesPerZoneType))
			k.limit = e.cfg.MaxResourcesPerZoneType
		}
		c := kdssync.NewClient(e.received, k, v, peer, zone, opts...)
		return c.Run(ctx, sess.Client())
	})
	return g.Wait()
}

func (e *Engine) runGlobal(g *errgroup.Group, ctx context.Context, lis net.Listener, tcfg kdsgrpc.Config, types int, opts []grpc.ServerOption) {
	glob := kdsgrpc.NewGlobal(types, func(ctx context.Context, zone string, s *mux.Session) error {
		fence, rej, err := e.live.claim(ctx, zone, s)
		if err != nil {
			return err
		}
		e.notReceivedByZone(ctx, zone)
		return e.runSync(ctx, zone, zone, s, e.validator, fence, rej)
	},
		kdsgrpc.WithSessionHeader(e.schemaHeader),
		kdsgrpc.WithServedTypes(e.served),
		kdsgrpc.WithConfig(tcfg),
		kdsgrpc.WithLogger(e.log),
		kdsgrpc.WithSessionOptions(e.sendObserver),
		kdsgrpc.WithSessionHooks(
			func(ev kdsgrpc.SessionEvent) {
				e.live.start(ev.Stream, ev.Zone, ev.Session)
				e.ins.Connected(ev.Zone)
				e.ins.SetSession(ev.Zone, streamPeer(ev.Stream), kdsauth.TokenIDFromContext(ev.Stream))
				e.metrics.SessionStarted(ev.Zone)
				e.metrics.ZoneSessionStarted(ev.Zone)
				e.tokenExpiry(ev)
				e.revoked.started(ev)
			},
			func(ev kdsgrpc.SessionEvent) {
				e.revoked.ended(ev)
				if !e.live.end(ev.Zone, ev.Session) {
					// Replaced: the zone's state follows the newer session.
					e.metrics.SessionReplaced(ev.Zone)
					return
				}
				e.ins.Disconnected(ev.Zone, ev.Err)
				e.metrics.SessionEnded(ev.Zone, endReason(ev.Err, ctx.Err() != nil))
			}))
	gs := kdsgrpc.NewServer(tcfg, opts...)
	kdsv1.RegisterKDSServer(gs, glob)
	g.Go(func() error {
		if err := gs.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("KDS server: %w", err)
		}
		return nil
	})
	g.Go(func() error { e.revoked.poll(ctx, token.DefaultKeyCheckInterval); return nil })
	g.Go(func() error {
		<-ctx.Done()
		gs.Stop() // ends every session; their goroutines are joined below
		glob.Wait()
		return nil
	})
}

// ParseGlobalAddresses splits a zone's global address setting into its
// replicas' addresses: HOST:PORT entries separated by commas. The error
// names the bad entry (empty, no port, a bad port, a repeat).
func ParseGlobalAddresses(list string) ([]string, error) { return kdsgrpc.ParseAddresses(list) }

func (e *Engine) runZone(g *errgroup.Group, ctx context.Context, tcfg kdsgrpc.Config, types int, opts []grpc.DialOption,
	credsFor func(serverName string) (credentials.TransportCredentials, error)) {
	addrs, _ := ParseGlobalAddresses(e.cfg.GlobalAddress) // checked by New
	d := kdsgrpc.NewDialer(addrs, e.cfg.ZoneName, types,
		func(ctx context.Context, s *mux.Session) error {
			md, err := kdsgrpc.PeerHeader(ctx)
			if err != nil {
				return err
			}
			e.notReceivedByGlobal(md)
			v, schemaTrusted, pluginTrusted := e.receiveValidator(md)
			if len(schemaTrusted) > 0 || len(pluginTrusted) > 0 {
				e.log.Debug("global announced the same schema, or the same plugin version and schema, as this zone has for some types: what it sends of them skips those checks on receipt (the envelope is always checked)",
					"same_schema", schemaTrusted, "same_plugin_and_schema", pluginTrusted)
			}
			return e.runSync(ctx, GlobalPeer, "", s, v, nil, e.fromGlobal)
		},
		kdsgrpc.WithReceives(e.received),
		kdsgrpc.WithConfig(tcfg),
		kdsgrpc.WithLogger(e.log),
		kdsgrpc.WithBackoff(kdsgrpc.Backoff{Base: e.cfg.ReconnectBackoffBase, Cap: e.cfg.ReconnectBackoffMax}),
		kdsgrpc.WithDialOptions(opts...),
		kdsgrpc.WithTransportCredentialsFor(credsFor),
		kdsgrpc.WithServerName(e.cfg.TLSServerName),
		kdsgrpc.WithSessionOptions(func(string) []mux.Option { return e.sendObserver(GlobalPeer) }),
		kdsgrpc.WithRefusedHook(func(err error) { e.ins.Refused(GlobalPeer, err) }),
		kdsgrpc.WithRefusalHint(e.refusalHint),
		kdsgrpc.WithSessionHooks(
			func(kdsgrpc.SessionEvent) {
				e.setConnected(true)
				e.ins.Connected(GlobalPeer)
				e.metrics.SessionStarted(e.cfg.ZoneName)
				e.ownTokenExpiry()
			},
			func(ev kdsgrpc.SessionEvent) {
				e.setConnected(false)
				e.sessionEndedByAuth(ev.Err)
				e.ins.Disconnected(GlobalPeer, ev.Err)
				e.metrics.SessionEnded(e.cfg.ZoneName, endReason(ev.Err, ctx.Err() != nil))
			}))
	e.metrics.ZoneStarting(e.cfg.ZoneName)
	e.mu.Lock()
	e.dialer = d
	e.mu.Unlock()
	g.Go(func() error { return d.Run(ctx) })
}

// globalConn is the zone's connection state (zero before the dialer
// exists, and on global).
func (e *Engine) globalConn() kdsgrpc.ConnState {
	e.mu.Lock()
	d := e.dialer
	e.mu.Unlock()
	if d == nil {
		return kdsgrpc.ConnState{}
	}
	return d.State()
}

// tokenExpiry records when the token of a session that started on global
// expires, and warns when that is within TokenExpiryWarning.
func (e *Engine) tokenExpiry(ev kdsgrpc.SessionEvent) {
	if ev.Stream == nil {
		return
	}
	exp := kdsauth.TokenExpiryFromContext(ev.Stream)
	if exp.IsZero() {
		return
	}
	e.metrics.SetZoneTokenExpiry(ev.Zone, exp)
	if left := time.Until(exp); left <= TokenExpiryWarning {
		e.log.Warn("zone token expires soon; generate a new one (kds-engine token generate) and replace the zone's token file",
			"zone", ev.Zone, "token_id", kdsauth.TokenIDFromContext(ev.Stream), "expires_at", exp.UTC().Format(time.RFC3339),
			"expires_in", token.Left(left))
	}
}

// ownTokenExpiry warns, on a zone whose session to global started, when
// its token expires within TokenExpiryWarning, as global does: a zone that
// runs for weeks reads its token file only at start and when it changes.
func (e *Engine) ownTokenExpiry() {
	if e.zoneToken == nil {
		return
	}
	info, err := e.zoneToken.Info()
	if err != nil || info.ExpiresAt.IsZero() {
		return
	}
	left := time.Until(info.ExpiresAt)
	args := []any{"file", e.cfg.TokenFile, "token_id", info.ID, "expires_at", info.ExpiresAt.UTC().Format(time.RFC3339)}
	switch {
	case left <= 0:
		// Global tolerates some clock skew: it took the token this time.
		e.log.Warn("zone token has expired; global will refuse the next session: generate a new one on global (kds-engine token generate) and replace the token file", args...)
	case left <= TokenExpiryWarning:
		e.log.Warn("zone token expires soon; generate a new one on global (kds-engine token generate) and replace the token file",
			append(args, "expires_in", token.Left(left))...)
	}
}

func (e *Engine) setConnected(v bool) {
	e.mu.Lock()
	e.connected = v
	e.mu.Unlock()
}

// sink stores what a session's client receives, attributed to zone.
type sink struct {
	s    *guard.Store
	zone string
	// fence and limit go with every write (global: the session's fence and
	// the per-zone per-type limit, checked inside the commit).
	fence *store.Fence
	limit int
	// retried, if set, hears of every attempt of Apply or Versions that failed because
	// the store was unavailable (attempt 1, 2, …) and of the success after
	// such attempts (attempt 0, err nil).
	retried func(attempt int, err error)
}

// hookedValidator runs hook before each validation (tests).
type hookedValidator struct {
	kdssync.Validator
	hook func()
}

func (h hookedValidator) Validate(ctx context.Context, rs []*resource.Resource) error {
	h.hook()
	return h.Validator.Validate(ctx, rs)
}

// Versions reads keys and versions only: a session start costs no copy of
// the specs the peer's resources hold.
func (k *sink) Versions(ctx context.Context, typ string) (map[string]string, error) {
	f := store.Filter{Type: typ, Zone: k.zone, LocalOnly: k.zone == ""}
	// At session start: while the store is unavailable the session waits
	// for it, as Apply does, rather than end (decision 0024).
	var kvs []store.KeyVersion
	err := k.whileUnavailable(ctx, func() error {
		var err error
		kvs, err = k.s.Versions(ctx, f)
		return err
	})
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		out[kdssync.WireName(kv.Key.Mesh, kv.Key.Name)] = kv.Version
	}
	return out, nil
}

// listenError reports that the listener what (set by flag) could not listen
// on addr; an address in use says what to do about it.
func listenError(what, flag, addr string, err error) error {
	if errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("%s listen on %s: %w; another process (another kds-engine?) listens there: stop it, or give this one another address with %s", what, addr, err, flag)
	}
	return fmt.Errorf("%s listen on %s: %w", what, addr, err)
}
