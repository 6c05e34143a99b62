// Command kds-plugin-dataplanes is the built-in plugin for the types a zone
// writes and global receives (ZoneToGlobal): Dataplane, the proxy next to a
// service instance, and DataplaneInsight, its connection status. Both are
// mesh-scoped.
//
// Build it into the engine's plugins directory (make plugins); the engine
// starts it.
package main

import "github.com/kds-engine/kds-engine/sdk"

// Version of this plugin, reported by Describe.
const Version = "0.2.0"

func plugin() sdk.Plugin {
	return sdk.Plugin{
		Name:    "dataplanes",
		Version: Version,
		Types:   []sdk.Type{dataplaneType, dataplaneInsightType},
	}
}

func main() { sdk.Serve(plugin()) }
