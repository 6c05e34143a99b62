// Command kds-engine runs a kds-engine role (global or zone) and talks to a
// running one through its admin API. See docs/cli.md.
package main

import (
	"os"

	"github.com/kds-engine/kds-engine/cmd/kds-engine/internal/cli"
)

// Set with -ldflags "-X main.version=... -X main.commit=...".
var (
	version = "dev"
	commit  = "dev"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], version, commit))
}
