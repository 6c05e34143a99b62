// Package docstest reads the repository's docs for tests that keep them in
// step with the code. Only tests import it.
package docstest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Read returns docs/name with every run of white space made one space, so
// a quoted fragment matches wherever the document wraps its lines. It finds
// docs/ next to the module's go.mod, above the test's directory.
func Read(t testing.TB, name string) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatalf("docs/%s: no go.mod above the test's directory", name)
		}
		dir = parent
	}
	data, err := os.ReadFile(filepath.Join(dir, "docs", name))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(strings.Fields(string(data)), " ")
}
