package cli

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kds-engine/kds-engine/cmd/kds-engine/internal/syncbuf"
)

// repoRoot is the module root relative to this package.
const repoRoot = "../../../.."

// buildPlugins builds the built-in plugins into a temporary directory, as
// make plugins does into bin/plugins.
func buildPlugins(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(os.Getenv("GOROOT"), "bin", "go")
		if _, statErr := os.Stat(goBin); statErr != nil {
			t.Skipf("no go tool to build the plugins: %v", err)
		}
	}
	dir := t.TempDir()
	for _, p := range []string{"policies", "dataplanes"} {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		cmd := exec.CommandContext(ctx, goBin, "build", "-o", filepath.Join(dir, "kds-plugin-"+p), "./plugins/"+p)
		cmd.Dir = repoRoot
		out, err := cmd.CombinedOutput()
		cancel()
		require.NoError(t, err, "build plugin %s: %s", p, out)
	}
	return dir
}

// section returns the text of output between "=== title" and the next
// section header.
func section(t *testing.T, output, title string) string {
	t.Helper()
	i := strings.Index(output, "\n=== "+title+"\n")
	require.GreaterOrEqual(t, i, 0, "no section %q in:\n%s", title, output)
	rest := output[i+len("\n=== "+title+"\n"):]
	if j := strings.Index(rest, "\n=== "); j >= 0 {
		rest = rest[:j]
	}
	return rest
}

func TestDemoOnceSyncsOverMTLSWithTokens(t *testing.T) {
	if testing.Short() {
		t.Skip("builds plugins and runs three engines")
	}
	plugins := buildPlugins(t)
	data := t.TempDir()
	var out, errb syncbuf.Buffer
	a := &App{Stdout: &out, Stderr: &errb}
	done := make(chan int, 1)
	go func() {
		done <- a.Run([]string{"demo", "--once", "--api-port", "0", "--plugins-dir", plugins,
			"--examples-dir", filepath.Join(repoRoot, "examples", "demo"), "--data-dir", data, "--timeout", "45s"})
	}()
	code := within(t, done, 90*time.Second, "demo --once did not finish")
	require.Equal(t, ExitOK, code, "stdout:\n%s\nstderr:\n%s", out.String(), errb.String())
	o := out.String()

	assert.Regexp(t, `(?m)^KDS: mutual TLS on localhost:\d+ \(CA `+regexp.QuoteMeta(filepath.Join(data, "pki", "ca.crt"))+`\)`, o)

	onGlobal := section(t, o, "global holds (synced from the zones)")
	for _, row := range []string{`default\s+frontend-1\s+zone-1`, `default\s+web-1\s+zone-1`, `default\s+web-1\s+zone-2`} {
		assert.Regexp(t, row, onGlobal)
	}
	for _, z := range []string{"zone-1", "zone-2"} {
		held := section(t, o, z+" holds (synced from global)")
		for _, row := range []string{`--- Mesh\nNAME\s+VERSION\s+AGE\ndefault\s`, `default\s+web-timeouts\s`, `default\s+allow-frontend\s`, `default\s+web-retries\s`} {
			assert.Regexp(t, row, held, z)
		}
	}
	zones := section(t, o, "zones as global sees them")
	assert.Regexp(t, `zone-1\s+online`, zones)
	assert.Regexp(t, `zone-2\s+online`, zones)
	assert.Contains(t, o, "All in sync. Admin APIs: global http://127.0.0.1:")

	// The demo wrote its certificates and 0600 tokens into the data dir,
	// and global's signing key next to its store.
	for _, f := range []string{"tokens/zone-1.token", "tokens/zone-2.token", "global/zone-token-signing.key"} {
		st, err := os.Stat(filepath.Join(data, f))
		if assert.NoError(t, err, f) {
			assert.Equal(t, os.FileMode(0o600), st.Mode().Perm(), f)
		}
	}
	_, err := os.Stat(filepath.Join(data, "pki", "ca.crt"))
	assert.NoError(t, err)
	tok, err := os.ReadFile(filepath.Join(data, "tokens", "zone-1.token"))
	require.NoError(t, err)
	claims := verifyToken(t, strings.TrimSpace(string(tok)), filepath.Join(data, "global", "zone-token-signing.key"))
	assert.Equal(t, "zone-1", claims["sub"])
}

// Without --once the demo suggests a command to try with the binary as it
// was run (make demo runs bin/kds-engine, which is not on PATH), and stops
// on a signal.
func TestDemoSuggestsTheBinaryItRunsAs(t *testing.T) {
	if testing.Short() {
		t.Skip("builds plugins and runs three engines")
	}
	plugins := buildPlugins(t)
	var out, errb syncbuf.Buffer
	sigs := make(chan os.Signal, 1)
	a := &App{Stdout: &out, Stderr: &errb, Program: "/opt/kds/bin/kds-engine",
		Signals: func() (<-chan os.Signal, func()) { return sigs, func() {} }}
	done := make(chan int, 1)
	go func() {
		done <- a.Run([]string{"demo", "--api-port", "0", "--plugins-dir", plugins,
			"--examples-dir", filepath.Join(repoRoot, "examples", "demo"), "--timeout", "45s"})
	}()
	deadline := time.Now().Add(90 * time.Second)
	for !strings.Contains(out.String(), "Try: ") && time.Now().Before(deadline) {
		select {
		case code := <-done:
			t.Fatalf("demo exited with %d before suggesting a command\nstdout:\n%s\nstderr:\n%s", code, out.String(), errb.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	sigs <- os.Interrupt
	require.Equal(t, ExitOK, within(t, done, 60*time.Second, "demo did not stop on a signal"), errb.String())
	assert.Regexp(t, `(?m)^Try: /opt/kds/bin/kds-engine get Dataplane --api http://127\.0\.0\.1:\d+ `, out.String())
}

// A port the demo wants that is in use is named, with the demo's own flag
// to move it (not the engine's --api-addr).
func TestDemoPortInUseNamesAPIPort(t *testing.T) {
	if testing.Short() {
		t.Skip("builds plugins")
	}
	plugins := buildPlugins(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer busy.Close()
	port := busy.Addr().(*net.TCPAddr).Port
	var out, errb syncbuf.Buffer
	a := &App{Stdout: &out, Stderr: &errb}
	code := a.Run([]string{"demo", "--once", "--api-port", strconv.Itoa(port), "--plugins-dir", plugins,
		"--examples-dir", filepath.Join(repoRoot, "examples", "demo"), "--timeout", "45s"})
	assert.Equal(t, ExitFailed, code)
	assert.Contains(t, errb.String(), fmt.Sprintf("demo: start global: listen tcp 127.0.0.1:%d: bind: address already in use: ", port))
	assert.Contains(t, errb.String(), "give the demo other ports with --api-port PORT (it uses PORT to PORT+2) or --api-port 0 (any free ports)")
	assert.NotContains(t, errb.String(), "--api-addr")
}

func TestDemoUsageErrors(t *testing.T) {
	var out, errb bytes.Buffer
	a := &App{Stdout: &out, Stderr: &errb}
	none := filepath.Join(t.TempDir(), "none")
	assert.Equal(t, ExitUsage, a.Run([]string{"demo", "--plugins-dir", none}))
	assert.Contains(t, errb.String(), "demo: plugins dir "+none+" does not exist; build the plugins first (make demo does) or point --plugins-dir at them")
	assert.NotContains(t, errb.String(), "not a directory")
}
