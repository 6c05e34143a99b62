package plugin

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	goplugin "github.com/hashicorp/go-plugin"
	"golang.org/x/sync/semaphore"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kds-engine/kds-engine/engine/internal/resource"
	"github.com/kds-engine/kds-engine/sdk"
	pluginv1 "github.com/kds-engine/kds-engine/sdk/proto/plugin/v1"
)

// managed is one plugin binary and its current process, if any.
type managed struct {
	name string
	path string
	log  hclog.Logger

	calls atomic.Int64
	// share queues the small batches waiting for a shared Validate RPC.
	share sharing
	// active counts the Validate RPCs in flight to the plugin and starts
	// those ever sent: a call during which the process exits tells by them
	// whether another call was in flight with it (see Host.call).
	active atomic.Int64
	starts atomic.Uint64

	mu       sync.Mutex // guards the fields below
	state    State
	inst     *instance // nil unless running
	version  string
	types    []resource.TypeDescriptor // as registered at Start
	restarts int
	lastErr  error
	// crashes are the resources whose validation made the process exit,
	// by fingerprint; suspects were in a batch during which it exited.
	crashes  map[[32]byte]crashRecord
	suspects map[[32]byte]bool
	// gate lets Validate RPCs go side by side (weight 1 each) or one
	// alone (exclusiveWeight); created on first use.
	gate *semaphore.Weighted
	// up, when set, is closed by the next setRunning (waitRunning).
	up chan struct{}
}

// instance is one started plugin process.
type instance struct {
	client  *goplugin.Client
	stderr  *stderrTail // the process's own stderr, last lines
	binary  string      // sha256 of the executed binary, hex
	conn    *sdk.Conn
	pid     int
	version string
	types   []resource.TypeDescriptor
}

// exited reports whether the process's connection has ended.
func (inst *instance) exited() bool {
	select {
	case <-inst.conn.Done():
		return true
	default:
		return false
	}
}

func (m *managed) setRunning(inst *instance) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.state, m.inst, m.version = StateRunning, inst, inst.version
	if m.up != nil {
		close(m.up)
		m.up = nil
	}
}

// waitRunning returns the plugin's running instance once one runs whose
// process has not exited, waiting for the supervisor's restart until ctx
// ends or for at most d. It fails with the plugin's ErrPluginDown error
// when none runs by then, or at once when a restart was refused (failed).
func (m *managed) waitRunning(ctx context.Context, d time.Duration) (*instance, error) {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		m.mu.Lock()
		inst, state := m.inst, m.state
		if state == StateRunning && inst != nil && !inst.exited() {
			m.mu.Unlock()
			return inst, nil
		}
		if state == StateFailed || ctx.Err() != nil {
			err := m.downErr()
			m.mu.Unlock()
			return nil, err
		}
		if m.up == nil {
			m.up = make(chan struct{})
		}
		up := m.up
		m.mu.Unlock()
		select {
		case <-up:
		case <-ctx.Done():
		case <-t.C:
			m.mu.Lock()
			defer m.mu.Unlock()
			return nil, m.downErr()
		}
	}
}

// exclusiveWeight is what an RPC that must be the only one in flight to
// its plugin takes of the plugin's gate: more than all others can hold.
const exclusiveWeight = 1 << 40

// callGate returns m's gate, creating it on first use.
func (m *managed) callGate() *semaphore.Weighted {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.gate == nil {
		m.gate = semaphore.NewWeighted(exclusiveWeight)
	}
	return m.gate
}

func (m *managed) setDown(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.state, m.inst, m.lastErr = StateDown, nil, err
}

// setFailed marks a plugin whose restart was refused.
func (m *managed) setFailed(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.state, m.inst, m.lastErr = StateFailed, nil, err
}

// current returns the running instance or an ErrPluginDown error.
func (m *managed) current() (*instance, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.state != StateRunning || m.inst == nil {
		return nil, m.downErr()
	}
	return m.inst, nil
}

// downErr must be called with mu held.
func (m *managed) downErr() error {
	if m.lastErr != nil {
		return fmt.Errorf("plugin %q (%s, last error: %v): %w", m.name, m.state, m.lastErr, ErrPluginDown)
	}
	return fmt.Errorf("plugin %q (%s): %w", m.name, m.state, ErrPluginDown)
}

func (m *managed) info() PluginInfo {
	m.mu.Lock()
	defer m.mu.Unlock()
	pi := PluginInfo{
		Name:     m.name,
		Version:  m.version,
		Path:     m.path,
		Types:    typeNames(m.types),
		State:    m.state,
		Restarts: m.restarts,
		Calls:    m.calls.Load(),
		Waiting:  m.share.waitingCallers(),
	}
	if m.lastErr != nil {
		pi.LastError = m.lastErr.Error()
	}
	if m.inst != nil {
		pi.PID = m.inst.pid
	}
	return pi
}

func (m *managed) kill() {
	m.mu.Lock()
	inst := m.inst
	m.inst = nil
	if m.state == StateRunning {
		m.state = StateDown
		m.lastErr = errors.New("engine shut down")
	}
	m.mu.Unlock()
	if inst != nil {
		inst.client.Kill()
	}
}

// launch runs one plugin process: it checks the plugins directory and the
// binary at m.path with everything on the way (see ErrUnsafePath), opens
// the binary once, verifies that open file against lock (the lock file as
// read for this launch, nil when there is none) and the binary's .sha256
// file, and executes that same open file, so what runs is what was
// checked and hashed even if the path is changed meanwhile. It then
// completes the handshake and calls Describe. An error of the checks is a
// refusal (isRefusal): nothing was executed. On error no process is left
// running.
func (h *Host) launch(ctx context.Context, m *managed, lock *lockFile) (*instance, error) {
	img, err := h.openImage(m.path)
	if err != nil {
		return nil, err
	}
	// The process has started (or failed to) once client.Client returns:
	// the open file or the copy is no longer needed then.
	defer img.release()
	if err := verifyDigest(m.path, lock, img.sum); err != nil {
		return nil, refused(err)
	}
	if h.beforeExec != nil {
		h.beforeExec(m.path)
	}
	tail := &stderrTail{}
	cmd := &exec.Cmd{
		Path: img.path,
		// argv[0] is the plugin's path, as if it had been run by name.
		Args: []string{m.path},
		// Its own process group: a signal meant for the engine's group
		// (Ctrl-C, `timeout`, a service manager) does not reach the plugin,
		// which the engine stops in order on shutdown; a plugin whose
		// engine died exits by itself (sdk.Serve watches its parent).
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true},
	}
	client := goplugin.NewClient(&goplugin.ClientConfig{
		HandshakeConfig:  sdk.Handshake,
		VersionedPlugins: sdk.VersionedPlugins(nil),
		Cmd:              cmd,
		AllowedProtocols: []goplugin.Protocol{goplugin.ProtocolGRPC},
		GRPCDialOptions:  sdk.GRPCDialOptions(),
		// A one-time certificate for each side, exchanged at the
		// handshake: only this engine can call the plugin, and the engine
		// talks only to the process it started.
		AutoMTLS:     !h.plainConn,
		Logger:       m.log,
		StartTimeout: h.startTimeout,
		SyncStdout:   lineLogger(m.log, "stdout"),
		SyncStderr:   lineLogger(m.log, "stderr"),
		Stderr:       tail,
	})
	inst, err := h.handshakeAndDescribe(ctx, m, client, tail)
	if err != nil {
		client.Kill()
		return nil, err
	}
	inst.stderr = tail
	if sum, err := img.sum(); err == nil {
		inst.binary = hex.EncodeToString(sum)
	}
	return inst, nil
}

func (h *Host) handshakeAndDescribe(ctx context.Context, m *managed, client *goplugin.Client, tail *stderrTail) (*instance, error) {
	proto, err := client.Client()
	if err != nil {
		if msg := protocolMismatch(err); msg != "" {
			return nil, fmt.Errorf("start and handshake: %s", msg)
		}
		// go-plugin's own errors span several lines of generic advice:
		// keep their first line, and say what the plugin itself printed.
		first, _, _ := strings.Cut(err.Error(), "\n")
		first = strings.TrimSpace(first)
		client.Kill() // returns once the plugin's stderr has been read to its end
		out := tail.summary()
		switch {
		case out == "":
			return nil, fmt.Errorf("start and handshake: %s", first)
		case tail.crashed():
			return nil, fmt.Errorf("start and handshake: the plugin exited: %s", out)
		}
		return nil, fmt.Errorf("start and handshake: %s; the plugin's last output: %s", first, out)
	}
	raw, err := proto.Dispense(sdk.PluginKey)
	if err != nil {
		return nil, fmt.Errorf("dispense %q: %w", sdk.PluginKey, err)
	}
	conn, ok := raw.(*sdk.Conn)
	if !ok {
		return nil, fmt.Errorf("dispense %q: unexpected %T", sdk.PluginKey, raw)
	}
	dctx, cancel := context.WithTimeout(ctx, h.describeTimeout)
	defer cancel()
	resp, err := conn.Describe(dctx, &pluginv1.DescribeRequest{EngineVersion: h.engineVersion})
	if err != nil {
		if errors.Is(dctx.Err(), context.DeadlineExceeded) || status.Code(err) == codes.DeadlineExceeded {
			return nil, fmt.Errorf("describe: no answer within %s", h.describeTimeout)
		}
		return nil, fmt.Errorf("describe: %w", err)
	}
	if resp.GetName() != m.name {
		m.log.Warn("plugin reports a different name than its file name; using the file name", "reported", resp.GetName())
	}
	inst := &instance{client: client, conn: conn, version: resp.GetVersion()}
	if rc := client.ReattachConfig(); rc != nil {
		inst.pid = rc.Pid
	}
	seen := map[string]bool{}
	for _, t := range resp.GetTypes() {
		d, err := descriptorFromProto(m.name, t)
		if err != nil {
			return nil, fmt.Errorf("describe: %w", err)
		}
		if seen[d.Name] {
			return nil, fmt.Errorf("describe: type %s reported twice", d.Name)
		}
		seen[d.Name] = true
		inst.types = append(inst.types, d)
	}
	return inst, nil
}

var incompatibleVersion = regexp.MustCompile(`incompatible API version with plugin\. Plugin version: (\d+), Client versions: \[([\d ]*)\]`)

// protocolMismatch explains go-plugin's protocol version refusal, saying
// what to upgrade, or returns "" for any other error.
func protocolMismatch(err error) string {
	m := incompatibleVersion.FindStringSubmatch(err.Error())
	if m == nil {
		return ""
	}
	plugin, _ := strconv.Atoi(m[1])
	ours := strings.Fields(m[2])
	newest := 0
	for _, v := range ours {
		n, _ := strconv.Atoi(v)
		newest = max(newest, n)
	}
	what := "upgrade kds-engine to a release that speaks it, or rebuild the plugin with an sdk release that also serves version " + strconv.Itoa(newest)
	if plugin < newest {
		what = "rebuild the plugin with a newer sdk release (github.com/kds-engine/kds-engine/sdk)"
	}
	return fmt.Sprintf("incompatible plugin protocol: the plugin speaks version %d, this engine speaks version %s; %s",
		plugin, strings.Join(ours, ", "), what)
}

// supervise waits for the process to exit and restarts it with backoff until
// the host closes. It owns inst until it hands it to m.
func (h *Host) supervise(m *managed, inst *instance) {
	defer h.wg.Done()
	backoff := h.backoffBase
	for {
		upSince := time.Now()
		select {
		case <-h.ctx.Done():
			return
		case <-inst.conn.Done():
		}
		m.setDown(errors.New("process exited"))
		inst.client.Kill() // reap and release go-plugin's goroutines (its stderr read to the end)
		exitErr := errors.New("process exited")
		if out := inst.stderr.summary(); out != "" {
			exitErr = fmt.Errorf("process exited: %s", out)
			m.mu.Lock()
			if m.state == StateDown {
				m.lastErr = exitErr
			}
			m.mu.Unlock()
		}
		m.log.Error("plugin process exited; restarting", "pid", inst.pid, "backoff", backoff, "error", exitErr)
		if time.Since(upSince) > h.backoffCap {
			backoff = h.backoffBase // it ran long enough: a fresh crash
		}
		for {
			t := time.NewTimer(backoff)
			select {
			case <-h.ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			backoff = min(backoff*2, h.backoffCap)
			next, err := h.relaunch(m)
			if isRefusal(err) {
				err = fmt.Errorf("restart refused, nothing was run: %w", err)
				m.setFailed(err)
				m.log.Error("plugin restart refused; the plugin is failed until its checks pass, writes of its types fail meanwhile",
					"error", err, "next_check_in", backoff)
				continue
			}
			if err != nil {
				m.setDown(err)
				m.log.Error("plugin restart failed", "error", err, "next_attempt_in", backoff)
				continue
			}
			if h.ctx.Err() != nil {
				next.client.Kill()
				return
			}
			m.mu.Lock()
			m.restarts++
			restarts := m.restarts
			registered := m.types
			m.mu.Unlock()
			if !sameTypes(registered, next.types) {
				m.log.Warn("plugin restarted with different types; the registry keeps the types from start until the engine restarts",
					"registered", typeNames(registered), "reported", typeNames(next.types))
			}
			m.setRunning(next)
			m.log.Info("plugin restarted", "pid", next.pid, "restarts", restarts)
			inst = next
			break
		}
	}
}

// relaunch reads the lock file afresh and launches m again, with every
// check of the first start. A lock file that existed at Start must still
// exist: removing it is no way to run a binary it would refuse. A lock file
// that is unsafe, malformed or gone refuses the launch.
func (h *Host) relaunch(m *managed) (*instance, error) {
	lock, err := loadLock(h.dir)
	if err != nil {
		return nil, refused(err)
	}
	if lock == nil && h.lockedAtStart {
		return nil, refused(fmt.Errorf("plugins lock file %s existed when the engine started and is gone; put it back, or restart the engine to run without it",
			filepath.Join(h.dir, LockFileName)))
	}
	return h.launch(h.ctx, m, lock)
}

func sameTypes(a, b []resource.TypeDescriptor) bool {
	key := func(ds []resource.TypeDescriptor) []string {
		out := make([]string, len(ds))
		for i, d := range ds {
			out[i] = fmt.Sprintf("%s/%s/%s/%d/%s", d.Name, d.Direction, d.Scope, d.SchemaVersion, d.Schema)
		}
		slices.Sort(out)
		return out
	}
	return slices.Equal(key(a), key(b))
}

// lineLogger returns a writer that logs each line written to it at info
// level, tagged with the stream name.
func lineLogger(l hclog.Logger, stream string) io.Writer {
	return &lineWriter{log: l, stream: stream}
}

type lineWriter struct {
	log    hclog.Logger
	stream string
	mu     sync.Mutex
	buf    []byte
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		if line := strings.TrimRight(string(w.buf[:i]), "\r"); line != "" {
			w.log.Info(line, "stream", w.stream)
		}
		w.buf = w.buf[i+1:]
	}
	if len(w.buf) > 64<<10 { // a very long line: flush it as is
		w.log.Info(string(w.buf), "stream", w.stream)
		w.buf = nil
	}
	return len(p), nil
}
