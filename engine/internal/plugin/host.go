package plugin

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/kds-engine/kds-engine/engine/internal/resource"
)

// FilePrefix starts the file name of every plugin binary; the rest of the
// name is the plugin's name.
const FilePrefix = "kds-plugin-"

// ChecksumSuffix ends the name of a plugin's checksum file, which sits next
// to the binary: kds-plugin-NAME.sha256 in sha256sum format. When it exists
// the binary is hashed and compared with it before every start.
const ChecksumSuffix = ".sha256"

// Defaults for the options.
const (
	DefaultHeadroom        = 16
	DefaultDescribeTimeout = 10 * time.Second
	DefaultStartTimeout    = 30 * time.Second
	DefaultBackoffBase     = 250 * time.Millisecond
	DefaultBackoffCap      = 30 * time.Second
	DefaultBatchSize       = 1000
	DefaultCallTimeout     = 30 * time.Second
	// MaxBatchBytes bounds the resources of one Validate RPC; a single
	// larger resource is sent alone.
	MaxBatchBytes = 4 << 20
	// CallsInFlight is how many Validate RPCs one validation keeps out at
	// once, so the engine prepares and sends the next batches while a
	// plugin decodes the current one.
	CallsInFlight = 4
	// SharedCallsInFlight is how many shared Validate RPCs (see
	// Host.ValidateBatch) one plugin has in flight at most; small batches
	// that arrive while all are out wait for one to end and go together.
	SharedCallsInFlight = 2
)

var (
	// ErrPluginDown is returned (wrapped with the plugin's name) for work on
	// the types of a plugin whose process is not running.
	ErrPluginDown = errors.New("plugin is down")
	// ErrDuplicateType is returned by Start when two plugins claim one type.
	ErrDuplicateType = errors.New("duplicate resource type")
	// ErrRequiredPlugin is returned by Start when a required plugin is
	// missing or failed to load.
	ErrRequiredPlugin = errors.New("required plugin unavailable")
)

// State of a plugin.
type State string

const (
	// StateRunning plugins serve validation.
	StateRunning State = "running"
	// StateDown plugins crashed and are being restarted.
	StateDown State = "down"
	// StateFailed plugins failed to load at start, and are not retried,
	// or crashed and were refused at a restart by the checks that run
	// before every launch (an unsafe path, a binary that does not match
	// the lock file or its checksum): nothing was run, and the checks run
	// again with the restart backoff until they pass.
	StateFailed State = "failed"
)

// PluginInfo is a snapshot of one plugin, for listings and metrics.
type PluginInfo struct {
	Name      string // from the file name kds-plugin-NAME
	Version   string // as reported by Describe
	Path      string
	Types     []string // types registered for this plugin, sorted
	State     State
	Restarts  int    // successful restarts after a crash
	LastError string // why the plugin last failed or went down; "" if never
	PID       int    // 0 unless running
	Calls     int64  // Validate RPCs sent
	Waiting   int    // callers waiting for a shared Validate RPC: queued, or sent again after it failed (see Host.ValidateBatch)
}

// Option configures a Host.
type Option func(*Host)

// WithRequired lists plugin names (NAME of kds-plugin-NAME) whose failure
// to load fails Start.
func WithRequired(names []string) Option {
	return func(h *Host) { h.required = slices.Clone(names) }
}

// WithHeadroom sets the send-buffer headroom added to types × window
// (default 16). Negative values are treated as 0.
func WithHeadroom(n int) Option { return func(h *Host) { h.headroom = max(n, 0) } }

// WithWindow sets the responses per type the sync layer keeps in flight,
// for the send-buffer capacity (default 1). Values below 1 mean 1.
func WithWindow(n int) Option { return func(h *Host) { h.window = max(n, 1) } }

// WithDescribeTimeout bounds the Describe call at every start (default 10s).
func WithDescribeTimeout(d time.Duration) Option { return func(h *Host) { h.describeTimeout = d } }

// WithStartTimeout bounds process start and handshake (default 30s).
func WithStartTimeout(d time.Duration) Option { return func(h *Host) { h.startTimeout = d } }

// WithRestartBackoff sets the first delay before restarting a crashed
// plugin and the cap the doubling delay never exceeds (defaults 250ms, 30s).
func WithRestartBackoff(base, limit time.Duration) Option {
	return func(h *Host) { h.backoffBase, h.backoffCap = base, max(base, limit) }
}

// WithBatchSize sets how many resources Host.Validate sends per RPC
// (default 1000).
func WithBatchSize(n int) Option { return func(h *Host) { h.batchSize = max(n, 1) } }

// WithCallTimeout bounds each Validate RPC (default 30s), so a plugin that
// hangs cannot hold a write forever.
func WithCallTimeout(d time.Duration) Option { return func(h *Host) { h.callTimeout = d } }

// WithCallSharing turns the sharing of Validate RPCs among concurrent small
// batches on or off (default on; see Host.ValidateBatch).
func WithCallSharing(on bool) Option { return func(h *Host) { h.shareCalls = on } }

// WithCallHook sets f to be called by every Validate RPC just before it is
// sent, with the number of resources in it; f may block (tests use it to
// hold a call in flight). Not for production use.
func WithCallHook(f func(n int)) Option { return func(h *Host) { h.beforeCall = f } }

// WithEngineVersion sets the version reported to plugins in Describe.
func WithEngineVersion(v string) Option { return func(h *Host) { h.engineVersion = v } }

// WithValidationObserver sets f to be called once for every Validate RPC
// sent to a plugin (one batch), with the plugin's name and how long the call
// took, whether it succeeded or not. f must not block.
func WithValidationObserver(f func(plugin string, d time.Duration)) Option {
	return func(h *Host) { h.observeValidation = f }
}

// Host loads and supervises plugins. Create with NewHost; see the package
// documentation for the life cycle.
type Host struct {
	dir             string
	log             hclog.Logger
	required        []string
	headroom        int
	window          int
	describeTimeout time.Duration
	startTimeout    time.Duration
	backoffBase     time.Duration
	backoffCap      time.Duration
	batchSize       int
	callTimeout     time.Duration
	engineVersion   string
	shareCalls      bool
	// observeValidation, if set, is told the duration of every Validate RPC.
	observeValidation func(plugin string, d time.Duration)

	// lockedAtStart is set by Start, before any supervisor runs, when the
	// lock file existed: a restart then needs it too.
	lockedAtStart bool

	// execMode is how launches execute the checked file (defaultExecMode).
	execMode execMode
	// plainConn turns go-plugin's AutoMTLS off: for the benchmark and the
	// test that compare with and without it.
	plainConn bool
	// beforeExec, when set (tests only, before Start), is called by every
	// launch after the binary passed its checks and before it is executed.
	beforeExec func(path string)
	// beforeCall, when set (tests only: WithCallHook), is called by every
	// Validate RPC just before it is sent, with the resources' count.
	beforeCall func(n int)

	copyMu   sync.Mutex // guards copyPath
	copyPath string     // execCopy's private directory, "" until used

	ctx    context.Context // cancelled by Close; stops supervisors
	cancel context.CancelFunc
	wg     sync.WaitGroup // supervisors
	// sends runs the shared Validate RPCs (share.go); goroutines are
	// added only under mu while !closed, and joined by Close.
	sends sync.WaitGroup

	mu       sync.RWMutex // guards the fields below
	started  bool
	closed   bool
	plugins  []*managed // sorted by name
	byName   map[string]*managed
	registry *Registry
	capacity Capacity
}

// NewHost returns a Host for the plugins in dir, logging to logger (which
// must not be nil) under the name "plugins".
func NewHost(dir string, logger hclog.Logger, opts ...Option) *Host {
	ctx, cancel := context.WithCancel(context.Background())
	h := &Host{
		dir:             dir,
		log:             logger.Named("plugins"),
		headroom:        DefaultHeadroom,
		window:          1,
		describeTimeout: DefaultDescribeTimeout,
		startTimeout:    DefaultStartTimeout,
		backoffBase:     DefaultBackoffBase,
		backoffCap:      DefaultBackoffCap,
		batchSize:       DefaultBatchSize,
		callTimeout:     DefaultCallTimeout,
		engineVersion:   "dev",
		shareCalls:      true,
		execMode:        defaultExecMode(),
		ctx:             ctx,
		cancel:          cancel,
		byName:          map[string]*managed{},
		registry:        &Registry{},
	}
	for _, o := range opts {
		o(h)
	}
	h.capacity = newCapacity(0, h.window, h.headroom)
	return h
}

// Start loads every plugin in the directory. A plugin that fails to start,
// hand-shake, verify (its lock file entry and checksum file, see
// LockFileName and ChecksumSuffix) or describe is logged and left out,
// unless it is required. Start returns an error (and leaves no process
// running) when the directory cannot be read or is unsafe, the lock file is
// unsafe or malformed, or a required plugin is missing or failed. Of two
// plugins that claim one type, the first (required ones first, then by
// name) keeps it and the other is left out as failed, or fails Start when
// it is required. It may be called once; ctx bounds the loading
// only.
func (h *Host) Start(ctx context.Context) error {
	h.mu.Lock()
	if h.started || h.closed {
		h.mu.Unlock()
		return errors.New("plugin host: Start called twice or after Close")
	}
	h.started = true
	h.mu.Unlock()

	candidates, bins, err := h.scan()
	if err != nil {
		return err
	}
	lock, err := loadLock(h.dir)
	if err != nil {
		return err
	}
	if lock != nil {
		h.lockedAtStart = true
		h.log.Info("plugins lock file found: every plugin binary must be listed in it and match", "path", lock.path, "entries", len(lock.entries))
		for _, name := range lock.stale(bins) {
			h.log.Warn("plugins lock file entry names no plugin binary in the plugins directory (missing, or not an executable file); ignoring the entry",
				"entry", name, "line", lock.entries[name].line, "lock_file", lock.path)
		}
	}
	found := map[string]bool{}
	for _, m := range candidates {
		found[m.name] = true
	}
	var reqErrs []error
	for _, r := range h.required {
		if !found[r] {
			reqErrs = append(reqErrs, fmt.Errorf("%w: %s: no executable %s%s in %s", ErrRequiredPlugin, r, FilePrefix, r, h.dir))
		}
	}
	if len(reqErrs) > 0 {
		return errors.Join(reqErrs...)
	}

	// Launch in parallel: a slow plugin's timeouts do not add up.
	insts := make([]*instance, len(candidates))
	errs := make([]error, len(candidates))
	var wg sync.WaitGroup
	for i, m := range candidates {
		wg.Go(func() { insts[i], errs[i] = h.launch(ctx, m, lock) })
	}
	wg.Wait()

	byPlugin := map[string][]resource.TypeDescriptor{}
	for i, m := range candidates {
		if errs[i] != nil {
			m.state, m.lastErr = StateFailed, errs[i]
			if slices.Contains(h.required, m.name) {
				reqErrs = append(reqErrs, fmt.Errorf("%w: %s: %w", ErrRequiredPlugin, m.name, errs[i]))
				continue
			}
			m.log.Error("plugin not loaded; continuing without it", "path", m.path, "error", errs[i])
		}
	}
	// Two plugins that claim one type: required plugins first, then by
	// name; the first keeps its types and a later one that claims any of
	// them is left out whole (failed, with both names and the fix), or
	// stops the start when it is required.
	claimed := map[string]string{} // type -> plugin
	for _, i := range claimOrder(candidates, h.required) {
		m := candidates[i]
		if insts[i] == nil {
			continue
		}
		var clash []string
		for _, d := range insts[i].types {
			if prev, ok := claimed[d.Name]; ok {
				clash = append(clash, fmt.Sprintf("type %s is already supplied by plugin %q", d.Name, prev))
			}
		}
		if len(clash) > 0 {
			err := fmt.Errorf("%w: %s; plugins are loaded required first, then in name order, and the first keeps a type: "+
				"remove %s%s from %s or the type from one of the plugins", ErrDuplicateType, strings.Join(clash, "; "), FilePrefix, m.name, h.dir)
			insts[i].client.Kill()
			insts[i] = nil
			m.state, m.lastErr = StateFailed, err
			if slices.Contains(h.required, m.name) {
				reqErrs = append(reqErrs, fmt.Errorf("%w: %s: %w", ErrRequiredPlugin, m.name, err))
				continue
			}
			m.log.Error("plugin not loaded; continuing without it", "path", m.path, "error", err)
			continue
		}
		for _, d := range insts[i].types {
			claimed[d.Name] = m.name
		}
		m.setRunning(insts[i])
		m.mu.Lock()
		m.types = insts[i].types
		m.mu.Unlock()
		byPlugin[m.name] = insts[i].types
	}
	killAll := func() {
		for i := range insts {
			if insts[i] != nil {
				insts[i].client.Kill()
			}
		}
	}
	if len(reqErrs) > 0 {
		killAll()
		return errors.Join(reqErrs...)
	}
	reg, err := NewRegistry(byPlugin)
	if err != nil {
		killAll()
		return err
	}
	capacity := newCapacity(reg.Len(), h.window, h.headroom)

	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		killAll()
		return errors.New("plugin host: closed during Start")
	}
	h.plugins = candidates
	for _, m := range candidates {
		h.byName[m.name] = m
	}
	h.registry = reg
	h.capacity = capacity
	for i, m := range candidates {
		if insts[i] == nil {
			continue
		}
		m.log.Info("plugin loaded", "version", insts[i].version, "types", typeNames(insts[i].types), "pid", insts[i].pid)
		h.wg.Add(1)
		go h.supervise(m, insts[i])
	}
	h.log.Info("send buffer capacity per logical stream",
		"formula", capacity.Formula, "types", capacity.Types, "window", capacity.Window, "headroom", capacity.Headroom, "total", capacity.Total,
		"reason", "a server keeps at most window responses per type in flight before their ACKs; headroom covers requests for types only the peer knows")
	return nil
}

// claimOrder returns the indexes of ms in the order they claim types:
// required plugins first, then the others, each group by name.
func claimOrder(ms []*managed, required []string) []int {
	idx := make([]int, len(ms))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int {
		ra, rb := slices.Contains(required, ms[a].name), slices.Contains(required, ms[b].name)
		if ra != rb {
			if ra {
				return -1
			}
			return 1
		}
		return strings.Compare(ms[a].name, ms[b].name)
	})
	return idx
}

// scan lists the plugin binaries in the directory, logging what it skips
// and refusing unsafe binaries. bins is every binary found, refused or not.
func (h *Host) scan() (out []*managed, bins []binary, err error) {
	bins, skips, err := scanDir(h.dir)
	if err != nil {
		return nil, nil, err
	}
	for _, s := range skips {
		h.log.Log(s.level, s.msg, append([]any{"path", s.path}, s.args...)...)
	}
	for _, b := range bins {
		if b.unsafe != nil {
			h.log.Error("refusing to load plugin", "path", b.path, "error", b.unsafe)
			continue
		}
		out = append(out, &managed{name: b.name, path: b.path, log: h.log.Named(b.name)})
	}
	return out, bins, nil
}

// binary is a plugin binary of the plugins directory: a regular,
// executable kds-plugin-NAME file (symlinks followed).
type binary struct {
	name   string // NAME
	path   string
	unsafe error // why checkSafe refuses it; nil if it does not
}

// skipped is a file of the plugins directory that is not a plugin binary,
// with the log line that says why.
type skipped struct {
	path  string
	level hclog.Level
	msg   string
	args  []any
}

// CheckDir checks dir as the engine does before it looks for plugins there:
// it must exist, be a directory and be safe (ErrUnsafePath). A missing dir's
// error says so, then how, which tells the user how to name the right one
// ("set --plugins-dir to ..."), and wraps fs.ErrNotExist.
func CheckDir(dir, how string) error {
	if _, _, err := checkSafe(dir, true); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("plugins dir %s does not exist; %s: %w", dir, how, err)
		}
		return fmt.Errorf("plugins dir: %w", err)
	}
	return nil
}

// scanDir checks that dir is safe and lists its plugin binaries, sorted by
// name, and the files it skips. The lock file and checksum files are
// neither: they are read when binaries start.
func scanDir(dir string) (bins []binary, skips []skipped, err error) {
	if err := CheckDir(dir, "set --plugins-dir (KDS_ENGINE_PLUGINS_DIR, pluginsDir in the config file) to the directory holding the "+FilePrefix+"* binaries"); err != nil {
		return nil, nil, err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("read plugins dir: %w", err)
	}
	skip := func(path string, level hclog.Level, msg string, args ...any) {
		skips = append(skips, skipped{path: path, level: level, msg: msg, args: args})
	}
	for _, e := range entries {
		name := e.Name()
		path := filepath.Join(dir, name)
		switch {
		case name == LockFileName:
			continue // read at Start and before every restart
		case !strings.HasPrefix(name, FilePrefix):
			skip(path, hclog.Info, "skipping file: not a plugin (name does not start with "+FilePrefix+")")
			continue
		case strings.HasSuffix(name, ChecksumSuffix):
			continue // a checksum, read when its binary starts
		case name == FilePrefix:
			skip(path, hclog.Warn, "skipping file: plugin has no name after "+FilePrefix)
			continue
		}
		fi, err := os.Stat(path) // follows symlinks
		if err != nil {
			skip(path, hclog.Warn, "skipping file: cannot stat", "error", err)
			continue
		}
		if !fi.Mode().IsRegular() {
			skip(path, hclog.Info, "skipping file: not a regular file")
			continue
		}
		if fi.Mode().Perm()&0o111 == 0 {
			skip(path, hclog.Warn, "skipping file: not executable", "mode", fi.Mode().String())
			continue
		}
		_, _, unsafe := checkSafe(path, false)
		bins = append(bins, binary{name: strings.TrimPrefix(name, FilePrefix), path: path, unsafe: unsafe})
	}
	slices.SortFunc(bins, func(a, b binary) int { return strings.Compare(a.name, b.name) })
	return bins, skips, nil
}

// Registry returns the type registry built by Start (empty before).
func (h *Host) Registry() *Registry {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.registry
}

// RunningVersion returns the version the named plugin's running process
// reported in Describe, and false when no process of it is running (down,
// failed, or no such plugin). A restart may run another build: callers
// that act on a version ask again each time.
func (h *Host) RunningVersion(name string) (string, bool) {
	h.mu.RLock()
	m := h.byName[name]
	h.mu.RUnlock()
	if m == nil {
		return "", false
	}
	inst, err := m.current()
	if err != nil {
		return "", false
	}
	return inst.version, true
}

// Capacity returns the send-buffer capacity computed by Start (types 0
// before Start).
func (h *Host) Capacity() Capacity {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.capacity
}

// Plugins returns a snapshot of every plugin found, sorted by name.
func (h *Host) Plugins() []PluginInfo {
	h.mu.RLock()
	ps := slices.Clone(h.plugins)
	h.mu.RUnlock()
	out := make([]PluginInfo, len(ps))
	for i, m := range ps {
		out[i] = m.info()
	}
	return out
}

// Close stops supervision, kills every plugin process and waits for them.
// It is safe to call more than once and before Start.
func (h *Host) Close() error {
	h.mu.Lock()
	h.closed = true
	ps := slices.Clone(h.plugins)
	h.mu.Unlock()
	h.cancel()
	h.wg.Wait()
	h.sends.Wait()
	for _, m := range ps {
		m.kill()
	}
	h.copyMu.Lock()
	defer h.copyMu.Unlock()
	if h.copyPath != "" {
		if err := os.RemoveAll(h.copyPath); err != nil {
			return fmt.Errorf("remove private plugin directory: %w", err)
		}
		h.copyPath = ""
	}
	return nil
}

func typeNames(ds []resource.TypeDescriptor) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.Name
	}
	slices.Sort(out)
	return out
}
