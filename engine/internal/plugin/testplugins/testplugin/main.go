// Command testplugin is a plugin for the plugin host's tests. Its behaviour
// follows its file name, kds-plugin-NAME, so one build serves every case:
//
//	alpha         types AlphaOne (mesh) and AlphaTwo (global); rejects
//	              {"bad": true} at spec.bad; writes to stdout and the log
//	beta          type BetaThing (mesh)
//	dupalpha      claims AlphaOne too
//	hang          never answers Describe
//	crashvalidate exits in the middle of Validate
//	hangvalidate  never answers Validate
//	reject        rejects every resource
//	shifty        type ShiftyV1, or ShiftyV2 once NAME.v2 exists next to it
//	garbage       breaks the handshake
//	future        serves protocol versions 1 and 2 (a newer SDK)
//	futureonly    serves only protocol version 2
//	panicky       type PanickyThing; a spec with "crash" in it makes it
//	              panic outside the SDK's recovery (the process dies), one
//	              with "slow" in it holds the call (30s at most)
//	panicstart    panics before serving
//	warner        type WarnerThing; warns about {"value": "old"}
//
// When KDS_TESTPLUGIN_RUNLOG names a file, every start appends a line
// "NAME PID" to it, so a test can tell whether a binary ran at all.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	goplugin "github.com/hashicorp/go-plugin"

	"github.com/kds-engine/kds-engine/engine/internal/plugin/testplugins/fixture"
	"github.com/kds-engine/kds-engine/sdk"
)

func main() {
	mode := strings.TrimPrefix(filepath.Base(os.Args[0]), "kds-plugin-")
	if log := os.Getenv("KDS_TESTPLUGIN_RUNLOG"); log != "" {
		f, err := os.OpenFile(log, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err == nil {
			_, err = fmt.Fprintf(f, "%s %d\n", mode, os.Getpid())
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "run log:", err)
			os.Exit(1)
		}
	}
	if mode == "panicstart" {
		panic("config file /etc/panicstart.yaml not found")
	}
	if mode == "garbage" {
		fmt.Println("this is not a handshake")
		os.Exit(1)
	}
	impl, err := fixture.Server(mode, os.Args[0])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	sdk.TuneRuntime()
	versions := sdk.VersionedPlugins(impl)
	switch mode {
	case "future":
		versions[2] = versions[1]
	case "futureonly":
		versions[2] = versions[1]
		delete(versions, 1)
	}
	goplugin.Serve(&goplugin.ServeConfig{
		HandshakeConfig:  sdk.Handshake,
		VersionedPlugins: versions,
		GRPCServer:       sdk.GRPCServer,
		Logger:           sdk.Logger(),
	})
}
