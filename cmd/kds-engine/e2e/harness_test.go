// Package e2e runs the real kds-engine binary and the real plugin binaries
// as separate processes and checks the documented behaviour end to end:
// sync in both directions, crash recovery, CLI errors, the demo, metrics,
// configuration errors, graceful shutdown and the plugins lock file.
//
// TestMain builds the binaries once into a temporary directory. Every
// process a test starts runs in its own process group and is killed, with
// its plugin processes, in t.Cleanup; its stderr is dumped when the test
// fails.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/kds-engine/kds-engine/cmd/kds-engine/internal/syncbuf"
	"github.com/kds-engine/kds-engine/engine"
	"github.com/kds-engine/kds-engine/engine/apitypes"
)

// moduleRoot is the repository root relative to this package.
const moduleRoot = "../../.."

// eventually is the longest any "eventually" wait takes.
const eventually = 60 * time.Second

var (
	engineBin  string // the kds-engine binary
	pluginsDir string // holds kds-plugin-policies and kds-plugin-dataplanes
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "kds-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: temp dir:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	engineBin = filepath.Join(dir, "kds-engine")
	pluginsDir = filepath.Join(dir, "plugins")
	builds := [][2]string{
		{engineBin, "./cmd/kds-engine"},
		{filepath.Join(pluginsDir, "kds-plugin-policies"), "./plugins/policies"},
		{filepath.Join(pluginsDir, "kds-plugin-dataplanes"), "./plugins/dataplanes"},
	}
	for _, b := range builds {
		cmd := exec.Command("go", "build", "-o", b[0], b[1])
		cmd.Dir = moduleRoot
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: go build %s: %v\n%s", b[1], err, out)
			return 1
		}
	}
	code := m.Run()
	// A plugin exits within about a second of its engine's death.
	left := processesUnder(dir)
	for deadline := time.Now().Add(5 * time.Second); len(left) > 0 && time.Now().Before(deadline); left = processesUnder(dir) {
		time.Sleep(100 * time.Millisecond)
	}
	if len(left) > 0 {
		fmt.Fprintf(os.Stderr, "e2e: processes of the built binaries still running after the tests: %v\n", left)
		for _, pid := range left {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		code = 1
	}
	if err := goleak.Find(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: leaked goroutines:", err)
		code = 1
	}
	return code
}

// processesUnder lists live processes whose executable is in dir.
func processesUnder(dir string) []int {
	return livePIDs(func(pid int, _ stat) bool {
		exe, err := os.Readlink(filepath.Join("/proc", strconv.Itoa(pid), "exe"))
		return err == nil && strings.HasPrefix(exe, dir+string(filepath.Separator))
	})
}

// proc is one running kds-engine process (global or zone).
type proc struct {
	name   string
	cmd    *exec.Cmd
	stderr *syncbuf.Buffer
	done   chan struct{} // closed when the process has exited
	err    error         // Wait's result, valid after done
}

// startProc starts the engine binary with args in its own process group and
// registers a cleanup that kills the group (the engine and its plugins) and
// dumps stderr if the test failed.
func startProc(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, stderr: &syncbuf.Buffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(engineBin, args...)
	p.cmd.Stdout = p.stderr
	p.cmd.Stderr = p.stderr
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	require.NoError(t, p.cmd.Start(), "start %s", name)
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	pgid := p.cmd.Process.Pid
	t.Cleanup(func() {
		// Plugins run in their own process groups; they exit by themselves
		// once their engine is gone.
		plugins := children(pgid)
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			t.Errorf("%s (pid %d) still running after SIGKILL", name, pgid)
		}
		requireGroupGone(t, pgid)
		requireGone(t, plugins)
		if t.Failed() {
			t.Logf("---- %s (pid %d) output ----\n%s", name, pgid, p.stderr.String())
		}
	})
	return p
}

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill9 kills the engine process only (not its plugins), like a crash.
func (p *proc) kill9(t *testing.T) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGKILL))
	p.wait(t, 10*time.Second)
}

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(d):
		t.Fatalf("%s did not exit within %s", p.name, d)
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	require.NoError(t, p.err)
	return 0
}

// groupMembers lists the live (non-zombie) processes of process group pgid.
func groupMembers(pgid int) []int {
	return livePIDs(func(_ int, st stat) bool { return st.pgrp == pgid })
}

// children lists the live child processes of pid.
func children(pid int) []int {
	return livePIDs(func(_ int, st stat) bool { return st.ppid == pid })
}

// livePIDs lists the live (non-zombie) processes for which keep is true.
func livePIDs(keep func(pid int, st stat) bool) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, ok := procStat(pid); ok && st.state != "Z" && keep(pid, st) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	st, ok := procStat(pid)
	return ok && st.state != "Z"
}

type stat struct {
	state      string
	ppid, pgrp int
}

// procStat reads /proc/PID/stat: "pid (comm) state ppid pgrp ...".
func procStat(pid int) (stat, bool) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return stat{}, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return stat{}, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 3 {
		return stat{}, false
	}
	ppid, _ := strconv.Atoi(f[1])
	pgrp, _ := strconv.Atoi(f[2])
	return stat{state: f[0], ppid: ppid, pgrp: pgrp}, true
}

// requireGroupGone fails the test if any process of group pgid survives.
// requireGone waits until none of pids is alive.
func requireGone(t *testing.T, pids []int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var left []int
		for _, pid := range pids {
			if alive(pid) {
				left = append(left, pid)
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("plugin processes still running after their engine was killed: %v", left)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func requireGroupGone(t *testing.T, pgid int) {
	t.Helper()
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		return // no procfs: nothing to check with
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		left := groupMembers(pgid)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("processes of group %d still running: %v", pgid, left)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	require.NoError(t, l.Close())
	return port
}

func addr(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// result is the outcome of one CLI run.
type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// cli runs a client verb (or any short-lived command) of the binary.
func cli(t *testing.T, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), eventually)
	defer cancel()
	cmd := exec.CommandContext(ctx, engineBin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		require.NoError(t, err, "run kds-engine %v", args)
	}
	require.NoError(t, ctx.Err(), "kds-engine %v did not finish in time", args)
	return r
}

// mustCLI runs a verb that must succeed.
func mustCLI(t *testing.T, args ...string) result {
	t.Helper()
	r := cli(t, args...)
	require.Equal(t, 0, r.code, "kds-engine %s\n%s", strings.Join(args, " "), r)
	return r
}

// resource is the JSON shape of a resource as `get -o json` prints it.
type resource struct {
	Type    string         `json:"type"`
	Mesh    string         `json:"mesh"`
	Name    string         `json:"name"`
	Zone    string         `json:"zone"`
	Labels  map[string]any `json:"labels"`
	Spec    map[string]any `json:"spec"`
	Version string         `json:"version"`
}

// list runs `get TYPE -o json` against api.
func list(t *testing.T, api, typ string, extra ...string) []resource {
	t.Helper()
	r := mustCLI(t, append([]string{"get", typ, "-o", "json", "--api", api}, extra...)...)
	var rs []resource
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &rs), "get %s output: %s", typ, r.stdout)
	return rs
}

// names returns ZONE/MESH/NAME of each resource (empty parts omitted).
func names(rs []resource) []string {
	out := make([]string, 0, len(rs))
	for _, r := range rs {
		parts := []string{}
		for _, p := range []string{r.Zone, r.Mesh, r.Name} {
			if p != "" {
				parts = append(parts, p)
			}
		}
		out = append(out, strings.Join(parts, "/"))
	}
	return out
}

// find returns the resource named name (and in zone, if given).
func find(rs []resource, name, zone string) (resource, bool) {
	for _, r := range rs {
		if r.Name == name && (zone == "" || r.Zone == zone) {
			return r, true
		}
	}
	return resource{}, false
}

// connectionTimeout digs spec.to[0].default.connectionTimeout out of a MeshTimeout.
func connectionTimeout(r resource) string {
	to, _ := r.Spec["to"].([]any)
	if len(to) == 0 {
		return ""
	}
	first, _ := to[0].(map[string]any)
	def, _ := first["default"].(map[string]any)
	s, _ := def["connectionTimeout"].(string)
	return s
}

// waitFor polls cond every 200ms until it holds or eventually passes; on
// timeout it fails with the last reason cond gave.
func waitFor(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(eventually)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after %s: %s", what, eventually, why)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// httpClient keeps no idle connections, so no transport goroutine outlives
// a request.
var httpClient = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// httpGet fetches url and returns the status and body.
func httpGet(url string) (int, string, error) {
	resp, err := httpClient.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// writeFile writes content into dir/name and returns the path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
	return p
}

// ---- a global and its zones ----

// pki is the TLS material shared by a global and its zones.
type pki struct {
	ca, cert, key string
}

// node is a global or zone with the settings it restarts with.
type node struct {
	name    string // "global" or the zone name
	dataDir string
	args    []string // everything but the address flags
	kdsPort int      // global only
	apiPort int
	p       *proc
}

func (n *node) api() string { return "http://" + addr(n.apiPort) }

// cluster is a global plus zones, all as processes.
type cluster struct {
	dir    string
	pki    pki
	global *node
	zones  map[string]*node
}

// newCluster starts a global with TLS (its token signing key created in its
// data dir beforehand, so zone tokens can be signed before it runs).
func newCluster(t *testing.T) *cluster {
	t.Helper()
	dir := t.TempDir()
	ca, cert, key, _, err := engine.GenerateDemoPKI(filepath.Join(dir, "pki"), nil)
	require.NoError(t, err)
	c := &cluster{dir: dir, pki: pki{ca: ca, cert: cert, key: key}, zones: map[string]*node{}}
	g := &node{name: "global", dataDir: filepath.Join(dir, "global")}
	require.NoError(t, os.MkdirAll(g.dataDir, 0o700))
	g.args = []string{"global", "--data-dir", g.dataDir, "--plugins-dir", pluginsDir,
		"--tls-cert-file", cert, "--tls-key-file", key}
	c.global = g
	c.start(t, g, true)
	return c
}

// addZone signs a token for zone with global's key and starts the zone.
func (c *cluster) addZone(t *testing.T, zone string) *node {
	t.Helper()
	tok, err := engine.GenerateZoneToken(c.global.dataDir, "", "", zone, time.Hour)
	require.NoError(t, err)
	tokenFile := writeFile(t, c.dir, zone+".token", tok)
	z := &node{name: zone, dataDir: filepath.Join(c.dir, zone)}
	require.NoError(t, os.MkdirAll(z.dataDir, 0o700))
	z.args = []string{"zone", "--name", zone, "--global", addr(c.global.kdsPort),
		"--data-dir", z.dataDir, "--plugins-dir", pluginsDir,
		"--ca-file", c.pki.ca, "--token-file", tokenFile,
		"--reconnect-backoff-base", "100ms", "--reconnect-backoff-max", "1s"}
	c.zones[zone] = z
	c.start(t, z, true)
	return z
}

// start runs n and waits until its /readyz answers 200 (a zone is ready
// once connected to global). With newPorts it picks free ports, and picks
// again if the process lost a race for one; otherwise it reuses n's ports
// (a restart), retrying while they are briefly still taken.
func (c *cluster) start(t *testing.T, n *node, newPorts bool) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		if newPorts || n.apiPort == 0 {
			n.apiPort = freePort(t)
			if n.name == "global" {
				n.kdsPort = freePort(t)
			}
		}
		args := append([]string{}, n.args...)
		args = append(args, "--api-addr", addr(n.apiPort))
		if n.name == "global" {
			args = append(args, "--kds-addr", addr(n.kdsPort))
		}
		n.p = startProc(t, fmt.Sprintf("%s#%d", n.name, attempt), args...)
		err := waitReady(n)
		if err == nil {
			return
		}
		out := n.p.stderr.String()
		if attempt < 5 && strings.Contains(out, "address already in use") {
			_ = syscall.Kill(-n.p.cmd.Process.Pid, syscall.SIGKILL)
			<-n.p.done
			time.Sleep(200 * time.Millisecond)
			continue
		}
		t.Fatalf("%s not ready: %v\n%s", n.name, err, out)
	}
}

// waitReady polls the node's /readyz until 200, the process exits, or
// eventually passes.
func waitReady(n *node) error {
	deadline := time.Now().Add(eventually)
	var last string
	for time.Now().Before(deadline) {
		if n.p.exited() {
			return fmt.Errorf("exited: %v", n.p.err)
		}
		code, body, err := httpGet(n.api() + "/readyz")
		if err == nil && code == http.StatusOK {
			return nil
		}
		last = fmt.Sprintf("%d %s %v", code, body, err)
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("readyz after %s: %s", eventually, last)
}

// cliJSON runs the CLI with args (which ask for `-o json`) and decodes its
// output into a T.
func cliJSON[T any](t *testing.T, args ...string) T {
	t.Helper()
	r := mustCLI(t, args...)
	var v T
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &v), "%s output: %s", strings.Join(args, " "), r.stdout)
	return v
}

// inspectZones is global's `inspect zones -o json`, by zone name.
func inspectZones(t *testing.T, g *node) map[string]apitypes.Conn {
	t.Helper()
	out := cliJSON[struct {
		Zones []apitypes.Conn `json:"zones"`
	}](t, "inspect", "zones", "-o", "json", "--api", g.api())
	m := map[string]apitypes.Conn{}
	for _, z := range out.Zones {
		m[z.Name] = z
	}
	return m
}

// inspectSync is a zone's `inspect sync -o json`.
func inspectSync(t *testing.T, z *node) apitypes.Conn {
	t.Helper()
	return cliJSON[apitypes.Conn](t, "inspect", "sync", "-o", "json", "--api", z.api())
}

// zoneOnline reports whether global's `inspect zones -o json` shows zone
// online, and what it showed of the zones.
func zoneOnline(t *testing.T, global *node, zone string) (bool, string) {
	t.Helper()
	zones := inspectZones(t, global)
	return zones[zone].Online, fmt.Sprintf("%+v", zones)
}

// readFile returns a file's content.
func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return string(b)
}

// httpPost posts a JSON body and returns the status and response body.
func httpPost(t *testing.T, url, body string) (int, string) {
	t.Helper()
	resp, err := httpClient.Post(url, "application/json", strings.NewReader(body))
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

func formatPIDs(pids []int) string { return fmt.Sprint(pids) }
