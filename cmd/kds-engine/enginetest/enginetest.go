// Package enginetest runs a plugin under test in a real kds-engine, for
// end-to-end tests of a plugin in a few lines:
//
//	func TestWithEngine(t *testing.T) {
//		e := enginetest.Start(t, ".", "greetings")
//		r := e.Apply("type: Greeting\nmesh: default\nname: hi\nspec: {text: hi}\n")
//		if r.Code != 0 {
//			t.Fatal(r)
//		}
//	}
//
// [Start] builds the plugin's main package, starts a global engine
// in-process with only that plugin (the same engine code as the kds-engine
// binary: launch checks, handshake, schema and plugin validation, the
// embedded store, the admin API on loopback), and stops it at cleanup.
// [Engine.Apply] and [Engine.CLI] run the kds-engine command line
// in-process against it, so a resource goes through exactly the path
// `kds-engine apply` takes and the output is what a user would see.
//
// The package lives in the engine's module (github.com/kds-engine/kds-engine),
// not in the SDK's: importing it from a plugin's tests adds the engine's
// dependencies to the plugin module's go.sum (they are not linked into the
// plugin's binary).
package enginetest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/kds-engine/kds-engine/cmd/kds-engine/internal/cli"
	"github.com/kds-engine/kds-engine/cmd/kds-engine/internal/syncbuf"
	"github.com/kds-engine/kds-engine/engine"
)

// StartTimeout bounds building the plugin and starting the engine.
const StartTimeout = 2 * time.Minute

// Engine is a running global engine with the plugin under test.
type Engine struct {
	t testing.TB
	// API is the admin API's URL.
	API string
	// PluginsDir holds the plugin's binary, kds-plugin-NAME.
	PluginsDir string
	log        *syncbuf.Buffer
}

// Result is the outcome of one command line run.
type Result struct {
	Code           int // the exit code: 0 success, 2 refused or failed (see docs/cli.md)
	Stdout, Stderr string
}

func (r Result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.Code, r.Stdout, r.Stderr)
}

// Start builds the main package in dir (a path go build understands) as
// kds-plugin-NAME, starts a global engine in-process with that plugin
// required (so a plugin that fails to start fails Start with the reason),
// and returns it once its admin API answers. The engine stops, and its
// plugin process with it, at cleanup; its log is printed if the test fails.
func Start(t testing.TB, dir, name string) *Engine {
	t.Helper()
	work := t.TempDir()
	plugins := filepath.Join(work, "plugins")
	if err := os.Mkdir(plugins, 0o755); err != nil {
		t.Fatalf("enginetest: %v", err)
	}
	bin := filepath.Join(plugins, "kds-plugin-"+name)
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("enginetest: go build %s: %v\n%s", dir, err, out)
	}
	log := &syncbuf.Buffer{}
	logger := hclog.New(&hclog.LoggerOptions{Name: "kds-engine", Output: log, Level: hclog.Info})
	cfg := engine.Config{
		Role:            engine.RoleGlobal,
		PluginsDir:      plugins,
		RequiredPlugins: []string{name},
		Store:           engine.StoreBolt,
		DataDir:         filepath.Join(work, "data"),
		KDSAddress:      "127.0.0.1:0",
		APIAddress:      "127.0.0.1:0",
		Insecure:        true,
	}
	e, err := engine.New(cfg, logger)
	if err != nil {
		t.Fatalf("enginetest: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	eng := &Engine{t: t, PluginsDir: plugins, log: log}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("enginetest: engine stopped with: %v", err)
		}
		if t.Failed() {
			t.Logf("engine log:\n%s", eng.Log())
		}
	})
	timer := time.NewTimer(StartTimeout)
	defer timer.Stop()
	select {
	case <-e.Started():
	case err := <-done:
		done <- nil
		t.Fatalf("enginetest: engine did not start: %v\n%s", err, eng.Log())
	case <-timer.C:
		t.Fatalf("enginetest: engine not started after %s\n%s", StartTimeout, eng.Log())
	}
	eng.API = "http://" + e.APIAddr().String()
	return eng
}

// Apply runs `kds-engine apply -f -` with yaml (one or more documents) on
// stdin against the engine.
func (e *Engine) Apply(yaml string) Result {
	e.t.Helper()
	return e.run(yaml, "apply", "-f", "-")
}

// CLI runs a client verb of the kds-engine command line (get, delete,
// plugins list, …) against the engine; --api is added.
func (e *Engine) CLI(args ...string) Result {
	e.t.Helper()
	return e.run("", args...)
}

func (e *Engine) run(stdin string, args ...string) Result {
	var out, errb bytes.Buffer
	a := &cli.App{
		Stdin:     strings.NewReader(stdin),
		Stdout:    &out,
		Stderr:    &errb,
		LookupEnv: func(string) (string, bool) { return "", false },
	}
	code := a.Run(append(args, "--api", e.API))
	return Result{Code: code, Stdout: out.String(), Stderr: errb.String()}
}

// Log returns what the engine has logged so far, the plugin's output
// included.
func (e *Engine) Log() string {
	return e.log.String()
}
