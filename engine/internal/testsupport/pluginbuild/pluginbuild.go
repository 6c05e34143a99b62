// Package pluginbuild builds plugin binaries for tests that run real plugin
// processes. It is meant for TestMain, where no *testing.T exists yet (plugin
// authors use sdk/sdktest.Build instead); Main is a whole TestMain body.
package pluginbuild

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

// Build runs `go build -o DIR/FILE PKG` for every FILE → PKG in bins, with
// PKG relative to the module root (for example "./plugins/policies"). It
// stops at the first failure and returns the compiler output with it.
func Build(dir string, bins map[string]string) error {
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return fmt.Errorf("find module root: %w", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	for file, pkg := range bins {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, file), pkg)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("build %s: %w\n%s", pkg, err, out)
		}
	}
	return nil
}

// Main is a TestMain body for packages that run real plugin processes: it
// creates a temporary directory, calls setup with it (build plugins there
// with Build, write fixtures), runs the tests, and when they pass fails the
// run if goroutines leaked (goleak) or if any check returns an error. The
// directory is removed afterwards. It returns the exit code for os.Exit.
func Main(m *testing.M, setup func(dir string) error, checks ...func() error) int {
	dir, err := os.MkdirTemp("", "kds-plugin-tests-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := setup(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	code := m.Run()
	if code != 0 {
		return code
	}
	if err := goleak.Find(); err != nil {
		fmt.Fprintln(os.Stderr, "goleak:", err)
		return 1
	}
	for _, check := range checks {
		if err := check(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	return 0
}
