// Package pluginbuild builds plugin binaries for tests that run real plugin
// processes. It is meant for TestMain, where no *testing.T exists yet (plugin
// authors use sdk/sdktest.Build instead).
package pluginbuild

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
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
