package e2e

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// guideSnippets returns the code blocks of docs/plugins.md marked with a
// "<!-- guide-test: NAME -->" line just before their opening fence, by NAME.
func guideSnippets(t *testing.T) map[string]string {
	t.Helper()
	f, err := os.Open(filepath.Join(moduleRoot, "docs", "plugins.md"))
	require.NoError(t, err)
	defer f.Close()
	out := map[string]string{}
	var name string
	var body []string
	inBlock := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case inBlock && strings.HasPrefix(line, "```"):
			out[name] = strings.Join(body, "\n") + "\n"
			inBlock, name, body = false, "", nil
		case inBlock:
			body = append(body, line)
		case strings.HasPrefix(line, "<!-- guide-test: "):
			name = strings.TrimSuffix(strings.TrimPrefix(line, "<!-- guide-test: "), " -->")
		case name != "" && strings.HasPrefix(line, "```"):
			inBlock = true
		}
	}
	require.NoError(t, sc.Err())
	return out
}

// TestPluginGuide follows docs/plugins.md's "Your first plugin" from an
// empty directory outside the repository, with the guide's own snippets:
// it creates the module, builds the plugin, loads it into a real engine and
// applies the guide's resource, which must be refused with the errors the
// guide shows; then the guide's sdktest and enginetest tests must pass.
func TestPluginGuide(t *testing.T) {
	snip := guideSnippets(t)
	for _, n := range []string{"init.sh", "main.go", "build.sh", "bad-greeting.yaml", "apply-output", "main_test.go", "field-errors", "warning", "engine_test.go", "enginetest.sh"} {
		require.NotEmpty(t, snip[n], "docs/plugins.md has no guide-test snippet %q", n)
	}
	src, err := filepath.Abs(moduleRoot)
	require.NoError(t, err)
	work := t.TempDir()
	require.False(t, strings.HasPrefix(work, src+string(filepath.Separator)), "the plugin module must be outside the repository")

	sh := func(dir, script string) {
		t.Helper()
		cmd := exec.Command("sh", "-e", "-c", script)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "KDS_ENGINE_SRC="+src, "GOWORK=off", "GOFLAGS=")
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "%s\n%s", script, out)
	}
	sh(work, snip["init.sh"])
	mod := filepath.Join(work, "kds-plugin-greetings")
	require.NoError(t, os.WriteFile(filepath.Join(mod, "main.go"), []byte(snip["main.go"]), 0o644))
	sh(mod, snip["build.sh"])

	sum, err := os.ReadFile(filepath.Join(mod, "go.sum"))
	require.NoError(t, err)
	assert.NotContains(t, string(sum), "go-control-plane", "a plugin does not depend on the engine's dependencies")
	assert.NotContains(t, string(sum), "cncf/xds")
	bin := filepath.Join(mod, "plugins", "kds-plugin-greetings")
	st, err := os.Stat(bin)
	require.NoError(t, err)
	t.Logf("guide plugin: %d lines of Go, binary %.1f MB", strings.Count(snip["main.go"], "\n"), float64(st.Size())/1e6)

	// Load it into a real engine.
	require.NoError(t, os.Chmod(filepath.Join(mod, "plugins"), 0o755))
	g := &node{name: "global", dataDir: filepath.Join(work, "data")}
	require.NoError(t, os.MkdirAll(g.dataDir, 0o700))
	g.args = []string{"global", "--insecure", "--data-dir", g.dataDir, "--plugins-dir", filepath.Join(mod, "plugins")}
	c := &cluster{dir: work, zones: map[string]*node{}, global: g}
	c.start(t, g, true)

	r := mustCLI(t, "plugins", "list", "--api", g.api())
	assert.Regexp(t, `greetings\s+1\.0\.0\s+running\s+Greeting`, r.stdout)

	yaml := writeFile(t, work, "bad-greeting.yaml", snip["bad-greeting.yaml"])
	r = cli(t, "apply", "-f", yaml, "--api", g.api())
	require.NotEqual(t, 0, r.code, "the guide's resource is refused: %s", r)
	var want []string
	for _, line := range strings.Split(strings.TrimSpace(snip["apply-output"]), "\n") {
		if strings.HasPrefix(line, "apply: ") {
			want = append(want, strings.Replace(line, "bad-greeting.yaml", yaml, 1))
		}
	}
	require.NotEmpty(t, want)
	assert.Equal(t, want, strings.Split(strings.TrimSpace(r.stderr), "\n"), "apply reports exactly what the guide shows")
	// The guide's sdktest tests pass, and its "Field errors" snippets
	// compile against the SDK (in a function of their own).
	require.NoError(t, os.WriteFile(filepath.Join(mod, "main_test.go"), []byte(snip["main_test.go"]), 0o644))
	fieldErrors := "package main\n\nimport \"github.com/kds-engine/kds-engine/sdk\"\n\n" +
		"func guideFieldErrors(i, port int) sdk.ErrorList {\n\tvar errs sdk.ErrorList\n" +
		snip["field-errors"] + snip["warning"] + "\treturn errs\n}\n"
	require.NoError(t, os.WriteFile(filepath.Join(mod, "guide_field_errors.go"), []byte(fieldErrors), 0o644))
	sh(mod, "go mod tidy && go test ./...")

	// The guide's enginetest test passes once the engine's module is
	// required as the guide says (the greeting it stores goes through the
	// guide's own plugin).
	require.NoError(t, os.WriteFile(filepath.Join(mod, "engine_test.go"), []byte(snip["engine_test.go"]), 0o644))
	sh(mod, snip["enginetest.sh"])

	good := strings.NewReplacer("text: hello", "text: good day", "times: 20", "times: 2", "language: EN", "language: en").Replace(snip["bad-greeting.yaml"])
	mustCLI(t, "apply", "-f", writeFile(t, work, "greeting.yaml", good), "--api", g.api())
}
