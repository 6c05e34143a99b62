package plugin

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kds-engine/kds-engine/engine/internal/resource"
	"github.com/kds-engine/kds-engine/engine/internal/testsupport/logbuf"
	"github.com/kds-engine/kds-engine/engine/internal/testsupport/pluginbuild"
)

// binDir holds the plugin binaries built once for the whole test run.
var binDir string

func TestMain(m *testing.M) {
	os.Exit(pluginbuild.Main(m, func(dir string) error {
		binDir = dir
		return pluginbuild.Build(dir, map[string]string{
			"policies":   "./plugins/policies",
			"dataplanes": "./plugins/dataplanes",
			"testplugin": "./engine/internal/plugin/testplugins/testplugin",
		})
	}, func() error {
		if kids := childPIDs(); len(kids) > 0 {
			return fmt.Errorf("plugin processes left behind: %v", kids)
		}
		return nil
	}))
}

// childPIDs lists the live (or unreaped) child processes of this test.
func childPIDs() []int {
	if runtime.GOOS != "linux" {
		return nil
	}
	entries, _ := os.ReadDir("/proc")
	var out []int
	me := os.Getpid()
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		rest := string(b[bytes.LastIndexByte(b, ')')+2:])
		f := strings.Fields(rest)
		if len(f) > 1 && f[1] == strconv.Itoa(me) {
			out = append(out, pid)
		}
	}
	return out
}

// pluginsDir makes a plugins directory holding kds-plugin-NAME for each name:
// policies and dataplanes are the built-in plugins, anything else the test
// plugin under that name.
func pluginsDir(t testing.TB, names ...string) string {
	t.Helper()
	dir := t.TempDir()
	for _, n := range names {
		src := filepath.Join(binDir, "testplugin")
		if n == "policies" || n == "dataplanes" {
			src = filepath.Join(binDir, n)
		}
		copyFile(t, src, filepath.Join(dir, FilePrefix+n), 0o755)
	}
	return dir
}

func copyFile(t testing.TB, src, dst string, mode os.FileMode) {
	t.Helper()
	in, err := os.Open(src)
	require.NoError(t, err)
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	require.NoError(t, err)
	_, err = io.Copy(out, in)
	require.NoError(t, err)
	require.NoError(t, out.Close())
}

func writeChecksum(t *testing.T, binary string, sum []byte) {
	t.Helper()
	line := fmt.Sprintf("%x  %s\n", sum, filepath.Base(binary))
	require.NoError(t, os.WriteFile(binary+ChecksumSuffix, []byte(line), 0o644))
}

func fileSum(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	s := sha256.Sum256(b)
	return s[:]
}

func testLogger(t *testing.T) (hclog.Logger, *logbuf.Buffer) {
	buf := &logbuf.Buffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Log("engine log:\n" + buf.String())
		}
	})
	return hclog.New(&hclog.LoggerOptions{Name: "test", Output: buf, Level: hclog.Info}), buf
}

func startHost(t *testing.T, dir string, opts ...Option) (*Host, *logbuf.Buffer) {
	t.Helper()
	log, buf := testLogger(t)
	h := NewHost(dir, log, opts...)
	t.Cleanup(func() { require.NoError(t, h.Close()) })
	require.NoError(t, h.Start(context.Background()))
	return h, buf
}

func info(t testing.TB, h *Host, name string) PluginInfo {
	t.Helper()
	for _, p := range h.Plugins() {
		if p.Name == name {
			return p
		}
	}
	t.Fatalf("no plugin %q", name)
	return PluginInfo{}
}

func res(typ, mesh, name, spec string) *resource.Resource {
	return &resource.Resource{Type: typ, Mesh: mesh, Name: name, Spec: json.RawMessage(spec)}
}

func validationErr(t *testing.T, err error) *resource.ValidationError {
	t.Helper()
	var ve *resource.ValidationError
	require.ErrorAs(t, err, &ve)
	return ve
}

const eventually = 20 * time.Second

func TestStartRegistersTypesFromSeveralPluginsAndValidates(t *testing.T) {
	dir := pluginsDir(t, "alpha", "beta", "policies", "dataplanes")
	require.NoError(t, os.WriteFile(filepath.Join(dir, "README.txt"), []byte("hi"), 0o644))
	copyFile(t, filepath.Join(binDir, "testplugin"), filepath.Join(dir, FilePrefix+"noexec"), 0o644)
	require.NoError(t, os.Mkdir(filepath.Join(dir, FilePrefix+"adir"), 0o755))
	alpha := filepath.Join(dir, FilePrefix+"alpha")
	writeChecksum(t, alpha, fileSum(t, alpha)) // a correct checksum is accepted

	h, logs := startHost(t, dir)

	var names []string
	for _, d := range h.Registry().Types() {
		names = append(names, d.Name+"@"+d.Plugin)
	}
	assert.Equal(t, []string{
		"AlphaOne@alpha", "AlphaTwo@alpha", "BetaThing@beta", "Dataplane@dataplanes", "DataplaneInsight@dataplanes",
		"Mesh@policies", "MeshRateLimit@policies", "MeshRetry@policies", "MeshTimeout@policies", "MeshTrafficPermission@policies",
	}, names)
	d, ok := h.Registry().Type("Dataplane")
	require.True(t, ok)
	assert.Equal(t, resource.ZoneToGlobal, d.Direction)
	assert.Equal(t, resource.ScopeMesh, d.Scope)
	assert.NotEmpty(t, d.Schema)
	d, _ = h.Registry().Type("AlphaTwo")
	assert.Equal(t, resource.ScopeGlobal, d.Scope)
	_, ok = h.Registry().Type("Nope")
	assert.False(t, ok)

	assert.Equal(t, Capacity{Types: 10, Window: 1, Headroom: 16, Total: 26, Formula: "10 types × 1 in flight + 16 headroom = 26"}, h.Capacity())
	assert.Contains(t, logs.String(), "10 types × 1 in flight + 16 headroom = 26")

	ps := h.Plugins()
	require.Len(t, ps, 4, "only the four executables are plugins")
	for _, p := range ps {
		assert.Equal(t, StateRunning, p.State, p.Name)
		assert.NotZero(t, p.PID, p.Name)
	}
	assert.Equal(t, PluginInfo{Name: "alpha", Version: "9.9.9", Path: alpha, Types: []string{"AlphaOne", "AlphaTwo"}, State: StateRunning, PID: ps[0].PID}, ps[0])

	out := logs.String()
	assert.Regexp(t, `skipping file: not a plugin.*README\.txt`, out)
	assert.Regexp(t, `skipping file: not executable.*kds-plugin-noexec`, out)
	assert.Regexp(t, `skipping file: not a regular file.*kds-plugin-adir`, out)
	// Plugin output reaches the engine log tagged with the plugin's name.
	assert.Eventually(t, func() bool {
		s := logs.String()
		return strings.Contains(s, "test.plugins.alpha: alpha says hello on stdout") &&
			regexpMatch(`test\.plugins\.alpha[.\w-]*: alpha describing itself`, s)
	}, eventually, 20*time.Millisecond)

	rs := []*resource.Resource{
		res("AlphaOne", "default", "good", `{"value":"x"}`),
		res("AlphaOne", "default", "bad", `{"bad":true}`),
		res("MeshTimeout", "default", "t1", `{"targetRef":{"kind":"Mesh"},"to":[{"targetRef":{"kind":"Mesh"},"default":{"connectionTimeout":"-5s"}}]}`),
		res("Dataplane", "default", "dp", `{"networking":{"address":"10.0.0.1","inbound":[{"port":80,"tags":{"kuma.io/service":"web"}}]}}`),
		res("Unknown", "default", "u", `{}`),
	}
	ve := validationErr(t, h.Validate(context.Background(), rs))
	require.Len(t, ve.Invalid, 3)
	assert.Equal(t, resource.Key{Type: "AlphaOne", Mesh: "default", Name: "bad"}, ve.Invalid[0].Key)
	assert.Equal(t, "spec.bad", ve.Invalid[0].Errors[0].Field)
	assert.Equal(t, "spec.to[0].default.connectionTimeout", ve.Invalid[1].Errors[0].Field)
	assert.Equal(t, "type", ve.Invalid[2].Errors[0].Field)
	require.NoError(t, h.Validate(context.Background(), rs[:1]))
}

func regexpMatch(re, s string) bool { return regexp.MustCompile(re).MatchString(s) }

func TestHeadroomOption(t *testing.T) {
	h, _ := startHost(t, pluginsDir(t, "beta"), WithHeadroom(4))
	assert.Equal(t, "1 types × 1 in flight + 4 headroom = 5", h.Capacity().Formula)
	assert.Equal(t, 5, h.Capacity().Total)
	h, _ = startHost(t, pluginsDir(t, "beta"), WithHeadroom(4), WithWindow(3))
	assert.Equal(t, "1 types × 3 in flight + 4 headroom = 7", h.Capacity().Formula)
	assert.Equal(t, 7, h.Capacity().Total)
}

// Of two plugins that claim one type the first by name keeps it; the other
// is failed with both names and the fix, and the engine starts. A required
// plugin claims first; two required ones that clash fail the start.
func TestDuplicateTypeKeepsTheFirstClaimant(t *testing.T) {
	dir := pluginsDir(t, "alpha", "dupalpha", "beta")
	log, _ := testLogger(t)
	h3 := NewHost(dir, log, WithRequired([]string{"alpha", "dupalpha"}))
	err := h3.Start(context.Background())
	require.ErrorIs(t, err, ErrDuplicateType)
	require.ErrorIs(t, err, ErrRequiredPlugin)
	require.NoError(t, h3.Close())
	assert.Empty(t, childPIDs(), "a refused start leaves no plugin running")

	h, logs := startHost(t, dir)
	assert.Equal(t, StateRunning, info(t, h, "alpha").State)
	assert.Equal(t, StateRunning, info(t, h, "beta").State)
	dup := info(t, h, "dupalpha")
	assert.Equal(t, StateFailed, dup.State)
	assert.Contains(t, dup.LastError, `type AlphaOne is already supplied by plugin "alpha"`)
	assert.Contains(t, dup.LastError, "remove kds-plugin-dupalpha from "+dir)
	assert.NotContains(t, dup.LastError, "\n")
	assert.Equal(t, 0, dup.PID, "the refused plugin's process is stopped")
	d, ok := h.Registry().Type("AlphaOne")
	require.True(t, ok)
	assert.Equal(t, "alpha", d.Plugin)
	assert.Contains(t, logs.String(), "plugin not loaded; continuing without it")

	h2, _ := startHost(t, dir, WithRequired([]string{"dupalpha"}))
	d, _ = h2.Registry().Type("AlphaOne")
	assert.Equal(t, "dupalpha", d.Plugin, "a required plugin claims first")
	assert.Equal(t, StateFailed, info(t, h2, "alpha").State)
	_, ok = h2.Registry().Type("AlphaTwo")
	assert.False(t, ok, "a plugin that clashes is left out whole")
}

// A plugin that panics at start is reported with its panic, on one line.
func TestPanicAtStartIsReportedOnOneLine(t *testing.T) {
	h, _ := startHost(t, pluginsDir(t, "panicstart", "beta"))
	p := info(t, h, "panicstart")
	assert.Equal(t, StateFailed, p.State)
	assert.Contains(t, p.LastError, "the plugin exited: panic: config file /etc/panicstart.yaml not found")
	assert.Contains(t, p.LastError, "goroutine 1 [running]")
	assert.NotContains(t, p.LastError, "\n")
	assert.NotContains(t, p.LastError, "compiled for this architecture")
}

// A resource that makes a plugin exit is reported with the plugin's panic,
// and refused with that reason afterwards without asking the plugin again;
// other resources are validated as usual once it is back.
func TestCrashingResourceIsNotSentAgain(t *testing.T) {
	h, _ := startHost(t, pluginsDir(t, "panicky"), WithRestartBackoff(time.Millisecond, time.Millisecond))
	bad := res("PanickyThing", "m", "bad", `{"value":"crash"}`)
	err := h.Validate(context.Background(), []*resource.Resource{bad})
	require.ErrorIs(t, err, ErrPluginDown)
	assert.Contains(t, err.Error(), "panic: cannot handle bad")
	waitRunning(t, h, "panicky", 1)
	assert.Contains(t, info(t, h, "panicky").LastError, "process exited: panic: cannot handle bad")

	err = h.Validate(context.Background(), []*resource.Resource{bad, res("PanickyThing", "m", "good", `{"value":"fine"}`)})
	var ve *resource.ValidationError
	require.ErrorAs(t, err, &ve)
	require.Len(t, ve.Invalid, 1)
	assert.Equal(t, "bad", ve.Invalid[0].Key.Name)
	assert.Contains(t, ve.Invalid[0].Errors[0].Message, `plugin "panicky" exited while validating this resource (panic: cannot handle bad`)
	assert.Contains(t, ve.Invalid[0].Errors[0].Message, "refused without asking the plugin again")
	assert.Equal(t, 1, info(t, h, "panicky").Restarts, "not sent again: no second crash")
}

// A batch during which the plugin exits is retried one resource at a time,
// which finds the resource that makes it exit.
func TestCrashInABatchFindsTheResource(t *testing.T) {
	h, _ := startHost(t, pluginsDir(t, "panicky"), WithRestartBackoff(time.Millisecond, time.Millisecond))
	batch := []*resource.Resource{res("PanickyThing", "m", "a", `{}`), res("PanickyThing", "m", "bad", `{"value":"crash"}`), res("PanickyThing", "m", "c", `{}`)}
	require.ErrorIs(t, h.Validate(context.Background(), batch), ErrPluginDown)
	waitRunning(t, h, "panicky", 1)
	require.ErrorIs(t, h.Validate(context.Background(), batch), ErrPluginDown, "sent alone, the bad one crashes it once more")
	waitRunning(t, h, "panicky", 2)
	var ve *resource.ValidationError
	require.ErrorAs(t, h.Validate(context.Background(), batch), &ve)
	require.Len(t, ve.Invalid, 1)
	assert.Equal(t, "bad", ve.Invalid[0].Key.Name)
	assert.Equal(t, 2, info(t, h, "panicky").Restarts)
}

// A plugin's warnings go to the collector in the context, for valid and
// invalid resources alike; they do not make a resource invalid.
func TestWarningsReachTheCollector(t *testing.T) {
	h, _ := startHost(t, pluginsDir(t, "warner"))
	ctx, warns := resource.WithWarnings(context.Background())
	err := h.Validate(ctx, []*resource.Resource{
		res("WarnerThing", "m", "a", `{"value":"old"}`),
		res("WarnerThing", "m", "b", `{"value":"new"}`),
		res("WarnerThing", "m", "c", `{"value":"old","bad":true}`),
	})
	var ve *resource.ValidationError
	require.ErrorAs(t, err, &ve)
	require.Len(t, ve.Invalid, 1, "a warning alone does not refuse a resource")
	assert.Equal(t, "c", ve.Invalid[0].Key.Name)
	got := warns.List()
	require.Len(t, got, 2)
	assert.Equal(t, "a", got[0].Key.Name)
	assert.Equal(t, "c", got[1].Key.Name)
	assert.Equal(t, []resource.FieldError{{Field: "spec.value", Message: `"old" is deprecated`}}, got[0].Errors)
	require.NoError(t, h.Validate(context.Background(), []*resource.Resource{res("WarnerThing", "m", "a", `{"value":"old"}`)}), "no collector: warnings are dropped")
}

// An incompatible protocol version says what to upgrade.
func TestIncompatibleProtocolSaysWhatToUpgrade(t *testing.T) {
	h, _ := startHost(t, pluginsDir(t, "futureonly"))
	fo := info(t, h, "futureonly")
	assert.Contains(t, fo.LastError, "incompatible plugin protocol: the plugin speaks version 2, this engine speaks version 1; upgrade kds-engine")
}

func TestChecksumMismatchIsRefused(t *testing.T) {
	dir := pluginsDir(t, "alpha", "beta")
	alpha := filepath.Join(dir, FilePrefix+"alpha")
	writeChecksum(t, alpha, make([]byte, sha256.Size))
	assertAlphaRefused(t, dir, "checksum mismatch")
}

// assertAlphaRefused starts a host on dir (plugins alpha and beta) and
// checks that alpha is refused with an error containing each of want while
// beta runs, then that a host requiring alpha fails to start with the same
// reason.
func assertAlphaRefused(t *testing.T, dir string, want ...string) {
	t.Helper()
	h, logs := startHost(t, dir)
	a := info(t, h, "alpha")
	assert.Equal(t, StateFailed, a.State)
	for _, w := range want {
		assert.Contains(t, a.LastError, w)
	}
	assert.Equal(t, StateRunning, info(t, h, "beta").State, "the engine continues without it")
	assert.Contains(t, logs.String(), "plugin not loaded; continuing without it")
	_, ok := h.Registry().Type("AlphaOne")
	assert.False(t, ok)

	// Required, the same failure fails Start with the reason.
	log, _ := testLogger(t)
	h2 := NewHost(dir, log, WithRequired([]string{"alpha"}))
	err := h2.Start(context.Background())
	require.ErrorIs(t, err, ErrRequiredPlugin)
	assert.Contains(t, err.Error(), want[0])
	require.NoError(t, h2.Close())
}

func TestDescribeTimeout(t *testing.T) {
	start := time.Now()
	h, _ := startHost(t, pluginsDir(t, "hang", "beta"), WithDescribeTimeout(time.Second))
	assert.Less(t, time.Since(start), 15*time.Second)
	hang := info(t, h, "hang")
	assert.Equal(t, StateFailed, hang.State)
	assert.Contains(t, hang.LastError, "describe: no answer within 1s")
	assert.Equal(t, StateRunning, info(t, h, "beta").State)
}

func TestBrokenHandshakeIsReported(t *testing.T) {
	h, _ := startHost(t, pluginsDir(t, "garbage", "beta"))
	g := info(t, h, "garbage")
	assert.Equal(t, StateFailed, g.State)
	assert.Contains(t, g.LastError, "start and handshake")
}

func TestProtocolVersionNegotiation(t *testing.T) {
	h, _ := startHost(t, pluginsDir(t, "future", "futureonly"))
	assert.Equal(t, StateRunning, info(t, h, "future").State, "a plugin that also speaks a newer version works")
	fo := info(t, h, "futureonly")
	assert.Equal(t, StateFailed, fo.State)
	assert.Contains(t, fo.LastError, "start and handshake")
	assert.Contains(t, fo.LastError, "version")
}

func TestRequiredPluginFailureFailsStart(t *testing.T) {
	log, _ := testLogger(t)
	h := NewHost(pluginsDir(t, "hang", "beta"), log, WithRequired([]string{"hang"}), WithDescribeTimeout(300*time.Millisecond))
	err := h.Start(context.Background())
	require.ErrorIs(t, err, ErrRequiredPlugin)
	assert.Contains(t, err.Error(), "hang")
	assert.Contains(t, err.Error(), "no answer within")
	require.NoError(t, h.Close())
	assert.Empty(t, childPIDs())

	h = NewHost(pluginsDir(t, "beta"), log, WithRequired([]string{"policies"}))
	err = h.Start(context.Background())
	require.ErrorIs(t, err, ErrRequiredPlugin)
	assert.Contains(t, err.Error(), "no executable kds-plugin-policies")
	require.NoError(t, h.Close())
}

func TestKilledPluginIsRestartedAndOthersUndisturbed(t *testing.T) {
	h, logs := startHost(t, pluginsDir(t, "alpha", "beta"), WithRestartBackoff(50*time.Millisecond, time.Second))
	alpha, beta := info(t, h, "alpha"), info(t, h, "beta")
	require.NoError(t, syscall.Kill(alpha.PID, syscall.SIGKILL))

	require.Eventually(t, func() bool {
		a := info(t, h, "alpha")
		return a.State == StateRunning && a.Restarts == 1 && a.PID != alpha.PID
	}, eventually, 10*time.Millisecond)
	assert.Contains(t, logs.String(), "plugin process exited; restarting")
	b := info(t, h, "beta")
	assert.Equal(t, beta.PID, b.PID, "beta kept its process")
	assert.Zero(t, b.Restarts)

	ve := validationErr(t, h.Validate(context.Background(), []*resource.Resource{
		res("AlphaOne", "m", "a", `{"bad":true}`), res("BetaThing", "m", "b", `{"bad":true}`),
	}))
	require.Len(t, ve.Invalid, 2, "both plugins validate after the restart")
	assert.Equal(t, "spec.bad", ve.Invalid[0].Errors[0].Field)
	assert.Equal(t, syscall.ESRCH, syscall.Kill(alpha.PID, 0), "the killed process was reaped")
}

func TestValidationWhilePluginDownNamesThePlugin(t *testing.T) {
	h, _ := startHost(t, pluginsDir(t, "alpha", "beta"), WithRestartBackoff(time.Hour, time.Hour))
	require.NoError(t, syscall.Kill(info(t, h, "alpha").PID, syscall.SIGKILL))
	require.Eventually(t, func() bool { return info(t, h, "alpha").State == StateDown }, eventually, 5*time.Millisecond)

	err := h.Validate(context.Background(), []*resource.Resource{res("AlphaOne", "m", "a", `{}`)})
	require.ErrorIs(t, err, ErrPluginDown)
	assert.Contains(t, err.Error(), `plugin "alpha"`)
	assert.Contains(t, info(t, h, "alpha").LastError, "process exited")

	require.NoError(t, h.Validate(context.Background(), []*resource.Resource{res("BetaThing", "m", "b", `{}`)}),
		"other plugins keep serving")
}

func TestValidateKeepsSeveralCallsInFlight(t *testing.T) {
	// The pair plugin answers a call only once another call is in flight
	// at the same time; sent one after the other, each call waits 10 s and
	// rejects its batch.
	h, _ := startHost(t, pluginsDir(t, "pair"), WithBatchSize(1))
	rs := make([]*resource.Resource, 4)
	for i := range rs {
		rs[i] = res("PairThing", "m", fmt.Sprintf("r%d", i), `{}`)
	}
	require.NoError(t, h.Validate(context.Background(), rs))
}

func TestCrashDuringValidateIsPluginDown(t *testing.T) {
	h, _ := startHost(t, pluginsDir(t, "crashvalidate"), WithRestartBackoff(time.Hour, time.Hour))
	err := h.Validate(context.Background(), []*resource.Resource{res("CrashvalidateThing", "m", "a", `{}`)})
	require.ErrorIs(t, err, ErrPluginDown)
	assert.Contains(t, err.Error(), "crashvalidate")
}

func TestHungValidateTimesOut(t *testing.T) {
	h, _ := startHost(t, pluginsDir(t, "hangvalidate"), WithCallTimeout(200*time.Millisecond))
	err := h.Validate(context.Background(), []*resource.Resource{res("HangvalidateThing", "m", "a", `{}`)})
	require.Error(t, err)
	assert.Contains(t, err.Error(), `validate with plugin "hangvalidate": no answer within 200ms`)
	assert.Equal(t, StateRunning, info(t, h, "hangvalidate").State, "a slow answer is not a crash")

	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(errors.New("client went away"))
	err = h.Validate(ctx, []*resource.Resource{res("HangvalidateThing", "m", "a", `{}`)})
	assert.ErrorContains(t, err, "client went away")

	// The caller's own deadline, shorter than the call timeout, is
	// reported as the caller's deadline, never as the plugin not answering
	// within the call timeout (gRPC may see the deadline a moment before
	// the context does).
	h2, _ := startHost(t, pluginsDir(t, "hangvalidate"), WithCallTimeout(time.Hour))
	for range 20 {
		dctx, dcancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		err = h2.Validate(dctx, []*resource.Resource{res("HangvalidateThing", "m", "a", `{}`)})
		dcancel()
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.NotContains(t, err.Error(), "no answer within")
	}
}

func TestCloseLeavesNoPluginProcess(t *testing.T) {
	log, _ := testLogger(t)
	h := NewHost(pluginsDir(t, "alpha", "beta", "policies", "dataplanes"), log)
	require.NoError(t, h.Start(context.Background()))
	var pids []int
	for _, p := range h.Plugins() {
		require.NotZero(t, p.PID)
		pids = append(pids, p.PID)
	}
	require.NoError(t, h.Close())
	require.NoError(t, h.Close(), "Close is idempotent")
	for _, pid := range pids {
		assert.Equal(t, syscall.ESRCH, syscall.Kill(pid, 0), "pid %d still exists", pid)
	}
	assert.Empty(t, childPIDs())
	for _, p := range h.Plugins() {
		assert.Zero(t, p.PID)
	}
}

func TestRestartWithChangedTypesIsLoggedAndRegistryStable(t *testing.T) {
	dir := pluginsDir(t, "shifty")
	h, logs := startHost(t, dir, WithRestartBackoff(20*time.Millisecond, time.Second))
	shifty := info(t, h, "shifty")
	require.NoError(t, os.WriteFile(filepath.Join(dir, FilePrefix+"shifty.v2"), nil, 0o644))
	require.NoError(t, syscall.Kill(shifty.PID, syscall.SIGKILL))
	require.Eventually(t, func() bool { return info(t, h, "shifty").Restarts == 1 }, eventually, 10*time.Millisecond)
	assert.Contains(t, logs.String(), "plugin restarted with different types")
	_, ok := h.Registry().Type("ShiftyV1")
	assert.True(t, ok, "the registry keeps the types from start")
	_, ok = h.Registry().Type("ShiftyV2")
	assert.False(t, ok)
}

func TestChecksumIsVerifiedBeforeEveryStart(t *testing.T) {
	dir := pluginsDir(t, "alpha")
	alpha := filepath.Join(dir, FilePrefix+"alpha")
	writeChecksum(t, alpha, fileSum(t, alpha))
	h, _ := startHost(t, dir, WithRestartBackoff(20*time.Millisecond, 100*time.Millisecond))
	pid := info(t, h, "alpha").PID
	// Swap the binary for another one; the restart must refuse it.
	require.NoError(t, os.Remove(alpha))
	copyFile(t, filepath.Join(binDir, "policies"), alpha, 0o755)
	require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
	require.Eventually(t, func() bool {
		a := info(t, h, "alpha")
		return a.State == StateFailed && strings.Contains(a.LastError, "checksum mismatch")
	}, eventually, 10*time.Millisecond)
	assert.Zero(t, info(t, h, "alpha").Restarts)
}

func TestBatchingKeepsRPCsFew(t *testing.T) {
	h, _ := startHost(t, pluginsDir(t, "alpha"), WithBatchSize(1000))
	rs := make([]*resource.Resource, 10_000)
	for i := range rs {
		spec := `{"value":"ok"}`
		if i%1000 == 7 {
			spec = `{"bad":true}`
		}
		rs[i] = res("AlphaOne", "m", fmt.Sprintf("r-%d", i), spec)
	}
	ve := validationErr(t, h.Validate(context.Background(), rs))
	require.Len(t, ve.Invalid, 10)
	assert.Equal(t, "r-7", ve.Invalid[0].Key.Name)
	assert.Equal(t, "r-9007", ve.Invalid[9].Key.Name)
	assert.EqualValues(t, 10, info(t, h, "alpha").Calls)
}

func TestStartErrors(t *testing.T) {
	log, _ := testLogger(t)
	h := NewHost(filepath.Join(t.TempDir(), "missing"), log)
	require.Error(t, h.Start(context.Background()))
	require.Error(t, h.Start(context.Background()), "Start twice")
	require.NoError(t, h.Close())

	h = NewHost(t.TempDir(), log)
	require.NoError(t, h.Start(context.Background()), "an empty directory is fine")
	assert.Equal(t, "0 types × 1 in flight + 16 headroom = 16", h.Capacity().Formula)
	require.NoError(t, h.Close())
	err := h.Validate(context.Background(), []*resource.Resource{res("X", "", "x", `{}`)})
	assert.Equal(t, "type", validationErr(t, err).Invalid[0].Errors[0].Field)
	_, err = h.ValidateBatch(context.Background(), "nope", nil)
	assert.False(t, errors.Is(err, ErrPluginDown))
}

// waitRunning waits until plugin name runs again after restarts restarts.
func waitRunning(t *testing.T, h *Host, name string, restarts int) {
	t.Helper()
	require.Eventually(t, func() bool {
		p := info(t, h, name)
		return p.State == StateRunning && p.Restarts == restarts
	}, eventually, 5*time.Millisecond)
}
