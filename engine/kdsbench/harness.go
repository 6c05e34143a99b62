// Package kdsbench runs the kds-bench benchmark modes: each mode runs the
// engine and a baseline in the same process run and returns a Report with
// every figure, its target and whether the target was met. It is the body of
// cmd/kds-bench, kept under engine/ so it can drive engine internals (the
// store, resources) directly.
package kdsbench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/kds-engine/kds-engine/engine"
	"github.com/kds-engine/kds-engine/engine/internal/resource"
	"github.com/kds-engine/kds-engine/engine/internal/store"
)

// Resource types of the synctest plugin the benchmarks use.
const (
	policyType = "SyncPolicy" // GlobalToZone
	statusType = "SyncStatus" // ZoneToGlobal
	benchMesh  = "default"
)

// env is the shared state of one benchmark run: a scratch directory, the
// demo PKI and the plugin directory.
type env struct {
	dir     string
	plugins string
	ca      string
	cert    string
	key     string
	log     hclog.Logger
	// window, when positive, fixes every engine's HTTP/2 windows
	// (engine.Config.InitialWindowSize).
	window int32
	// maxMessage, when positive, is every engine's max message size
	// (engine.Config.MaxMessageSize).
	maxMessage int
}

// newEnv creates a scratch directory and PKI. pluginsDir empty means build
// the synctest plugin into the scratch directory with the go tool (run from
// inside the module).
func newEnv(pluginsDir string, log hclog.Logger) (*env, error) {
	dir, err := os.MkdirTemp("", "kds-bench-")
	if err != nil {
		return nil, err
	}
	v := &env{dir: dir, plugins: pluginsDir, log: log}
	if v.plugins == "" {
		v.plugins = filepath.Join(dir, "plugins")
		if err := buildPlugin(v.plugins); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	if v.ca, v.cert, v.key, _, err = engine.GenerateDemoPKI(filepath.Join(dir, "pki"), nil); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("demo PKI: %w", err)
	}
	return v, nil
}

// buildPlugin builds kds-plugin-synctest into dir.
func buildPlugin(dir string) error {
	cmd := exec.Command("go", "build", "-o", filepath.Join(dir, "kds-plugin-synctest"),
		"github.com/kds-engine/kds-engine/engine/internal/testsupport/syncplugin")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build kds-plugin-synctest (run inside the kds-engine module or pass --plugins-dir): %w\n%s", err, out)
	}
	return nil
}

func (v *env) close() { os.RemoveAll(v.dir) }

func (v *env) mkdir(name string) (string, error) {
	d := filepath.Join(v.dir, name)
	return d, os.MkdirAll(d, 0o700)
}

// node is one running engine.
type node struct {
	e       *engine.Engine
	cfg     engine.Config
	cancel  context.CancelFunc
	done    chan error
	stopped bool
}

// stop ends the engine and waits for Run to return.
func (n *node) stop() error {
	if n.stopped {
		return nil
	}
	n.stopped = true
	n.cancel()
	select {
	case err := <-n.done:
		return err
	case <-time.After(60 * time.Second):
		return errors.New("engine did not stop within 60s")
	}
}

// startLoadedGlobal starts a global named name holding n SyncPolicy
// resources of about size bytes (validated and stored in batches), showing
// label on the progress bar while it loads.
func (v *env) startLoadedGlobal(ctx context.Context, o Options, name, label string, n, size int) (*node, error) {
	g, err := v.startGlobal(name, nil)
	if err != nil {
		return nil, err
	}
	o.Progress.Start(label, n)
	err = g.e.BulkLoad(ctx, makeResources(policyType, "p", n, size))
	o.Progress.Finish()
	if err != nil {
		_ = g.discard()
		return nil, fmt.Errorf("load global: %w", err)
	}
	return g, nil
}

// discard stops the engine and removes its data directory, so that runs
// in one process do not pile up store files (and their page cache) that
// later runs would pay for.
func (n *node) discard() error {
	err := n.stop()
	if rerr := os.RemoveAll(n.cfg.DataDir); err == nil {
		err = rerr
	}
	return err
}

func (v *env) start(cfg engine.Config) (*node, error) {
	cfg.APIAddress = "127.0.0.1:0"
	cfg.PluginsDir = v.plugins
	if v.window > 0 {
		cfg.InitialWindowSize = v.window
	}
	if v.maxMessage > 0 {
		cfg.MaxMessageSize = v.maxMessage
	}
	e, err := engine.New(cfg, v.log)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &node{e: e, cfg: cfg, cancel: cancel, done: make(chan error, 1)}
	go func() { n.done <- e.Run(ctx) }()
	select {
	case <-e.Started():
		return n, nil
	case err := <-n.done:
		cancel()
		return nil, fmt.Errorf("start %s: %w", cfg.Role, err)
	case <-time.After(120 * time.Second):
		cancel()
		<-n.done
		return nil, fmt.Errorf("start %s: not started within 120s", cfg.Role)
	}
}

// startGlobal starts a global on a bolt store in a fresh directory (or the
// memory store), TLS on, no session rate limit.
func (v *env) startGlobal(name string, mut func(*engine.Config)) (*node, error) {
	dd, err := v.mkdir(name)
	if err != nil {
		return nil, err
	}
	cfg := engine.Config{
		Role: engine.RoleGlobal, DataDir: dd, KDSAddress: "127.0.0.1:0",
		TLSCertFile: v.cert, TLSKeyFile: v.key,
		SessionsPerMinute: -1, MaxResourcesPerZoneType: -1,
	}
	if mut != nil {
		mut(&cfg)
	}
	return v.start(cfg)
}

// zoneConfig returns the config of zone name dialing addr (HOST:PORT; the
// certificate is for localhost) with a token signed by g. dataDir empty
// means a fresh directory.
func (v *env) zoneConfig(g *node, name, addr, dataDir string) (engine.Config, error) {
	// Valid for longer than engine.TokenExpiryWarning: a shorter token
	// makes global warn that it expires soon on every session of every
	// zone, which buries the log of a run with 100 zones.
	tok, err := engine.GenerateZoneToken(g.cfg.DataDir, "", "", name, 2*engine.TokenExpiryWarning)
	if err != nil {
		return engine.Config{}, fmt.Errorf("zone token: %w", err)
	}
	tf := filepath.Join(v.dir, name+".token")
	if err := os.WriteFile(tf, []byte(tok), 0o600); err != nil {
		return engine.Config{}, err
	}
	if dataDir == "" {
		if dataDir, err = v.mkdir(name); err != nil {
			return engine.Config{}, err
		}
	}
	return engine.Config{
		Role: engine.RoleZone, ZoneName: name, GlobalAddress: addr, DataDir: dataDir,
		CAFile: v.ca, TokenFile: tf,
		ReconnectBackoffBase: 20 * time.Millisecond, ReconnectBackoffMax: 200 * time.Millisecond,
	}, nil
}

// localAddr turns a bound address into localhost:PORT (the demo
// certificate's name).
func localAddr(a net.Addr) string {
	_, p, _ := net.SplitHostPort(a.String())
	return "localhost:" + p
}

// pad returns a JSON spec of about size bytes for the synctest types.
func specOf(value string, size int) []byte {
	n := max(size-len(value)-24, 0)
	return []byte(`{"value":"` + value + `","pad":"` + strings.Repeat("x", n) + `"}`)
}

// makeResources returns n resources of typ named prefix-i with specs of
// about size bytes.
func makeResources(typ, prefix string, n, size int) []*resource.Resource {
	rs := make([]*resource.Resource, n)
	for i := range rs {
		rs[i] = &resource.Resource{Type: typ, Mesh: benchMesh, Name: fmt.Sprintf("%s-%d", prefix, i), Spec: specOf("v0", size)}
	}
	return rs
}

// counter follows a store and counts the resources matching a filter.
// Versions maps every matching key's name to its stored version.
type counter struct {
	mu       sync.Mutex
	versions map[resource.Key]string
	changed  chan struct{}
	// seen is called for every matching event after it is counted.
	seen func(store.Event)
}

// follow starts counting f on s until ctx ends. The returned function joins
// the follower. expect is how many resources the caller expects f to
// match (0 if it does not know): the counter is sized for them up front,
// so that a timed window does not include growing it from empty.
func follow(ctx context.Context, s store.Store, f store.Filter, expect int, seen func(store.Event)) (*counter, func(), error) {
	w, items, _, err := store.SnapshotAndWatch(ctx, s, f)
	if err != nil {
		return nil, nil, fmt.Errorf("watch store: %w", err)
	}
	c := &counter{versions: make(map[resource.Key]string, max(len(items), expect)), changed: make(chan struct{}, 1), seen: seen}
	for _, r := range items {
		c.versions[r.Key()] = r.Version
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case <-w.Done():
				return
			case <-w.C():
				evs := w.Next()
				c.mu.Lock()
				for _, ev := range evs {
					if !f.Matches(ev.Resource) {
						continue
					}
					if ev.Kind == store.EventDelete {
						delete(c.versions, ev.Resource.Key())
					} else {
						c.versions[ev.Resource.Key()] = ev.Resource.Version
					}
				}
				c.mu.Unlock()
				if c.seen != nil {
					for _, ev := range evs {
						if f.Matches(ev.Resource) {
							c.seen(ev)
						}
					}
				}
				select {
				case c.changed <- struct{}{}:
				default:
				}
			}
		}
	}()
	return c, func() { <-done }, nil
}

func (c *counter) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.versions)
}

// waitFor waits until cond holds on the counter, or nothing changed for
// stall, or ctx ends.
func (c *counter) waitFor(ctx context.Context, stall time.Duration, cond func(map[resourceKey]string) bool) error {
	t := time.NewTimer(stall)
	defer t.Stop()
	for {
		c.mu.Lock()
		ok := cond(c.versions)
		c.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-t.C:
			return errStalled
		case <-c.changed:
			if !t.Stop() {
				select {
				case <-t.C:
				default:
				}
			}
			t.Reset(stall)
		}
	}
}

var errStalled = errors.New("stalled: no change")

// proxy is a TCP relay that counts the bytes crossing it and holds new
// connections until Open. With a shaped Link it imitates that network.
type proxy struct {
	lis      net.Listener
	target   string
	link     Link
	gate     chan struct{}
	gateOnce sync.Once
	up, down atomic.Int64
	mu       sync.Mutex
	conns    []net.Conn
	wg       sync.WaitGroup
}

func newProxy(target string, open bool) (*proxy, error) {
	return newLinkProxy(target, open, Link{})
}

// newLinkProxy is newProxy over the network l describes.
func newLinkProxy(target string, open bool, l Link) (*proxy, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &proxy{lis: lis, target: target, link: l, gate: make(chan struct{})}
	if open {
		p.Open()
	}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

func (p *proxy) Addr() net.Addr { return p.lis.Addr() }

// Open lets held and future connections through.
func (p *proxy) Open() { p.gateOnce.Do(func() { close(p.gate) }) }

// Bytes returns the bytes relayed so far, both directions.
func (p *proxy) Bytes() int64 { return p.up.Load() + p.down.Load() }

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.lis.Accept()
		if err != nil {
			return
		}
		p.track(c)
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			<-p.gate
			u, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				return
			}
			p.track(u)
			var wg sync.WaitGroup
			wg.Add(2)
			go func() { defer wg.Done(); p.relay(u, c, &p.up); u.Close() }()
			go func() { defer wg.Done(); p.relay(c, u, &p.down); c.Close() }()
			wg.Wait()
		}()
	}
}

func (p *proxy) track(c net.Conn) {
	p.mu.Lock()
	p.conns = append(p.conns, c)
	p.mu.Unlock()
}

func (p *proxy) relay(dst io.Writer, src io.Reader, n *atomic.Int64) {
	if p.link.shaped() {
		shapedRelay(dst, src, p.link, n)
		return
	}
	relay(dst, src, n)
}

func relay(dst io.Writer, src io.Reader, n *atomic.Int64) {
	buf := make([]byte, 256<<10)
	for {
		k, err := src.Read(buf)
		if k > 0 {
			n.Add(int64(k))
			if _, werr := dst.Write(buf[:k]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// Close stops the proxy, drops its connections and joins its goroutines.
func (p *proxy) Close() {
	p.lis.Close()
	p.Open()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// percentile returns the q-quantile (0..1) of ds (sorted in place).
func percentile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	i := int(q*float64(len(ds))+0.5) - 1
	return ds[min(max(i, 0), len(ds)-1)]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

type resourceKey = resource.Key

type engineConfig = engine.Config
