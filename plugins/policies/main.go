// Command kds-plugin-policies is the built-in plugin for the policy types a
// mesh operator writes on global and every zone receives (GlobalToZone):
// the global-scoped Mesh and the mesh-scoped MeshTrafficPermission,
// MeshTimeout, MeshRetry and MeshRateLimit. The specs follow the
// targetRef / from / to / default shape of Kuma's policies, kept small.
//
// Build it into the engine's plugins directory (make plugins); the engine
// starts it. Run by hand it explains that and exits.
package main

import "github.com/kds-engine/kds-engine/sdk"

// Version of this plugin, reported by Describe.
const Version = "0.2.0"

func plugin() sdk.Plugin {
	return sdk.Plugin{
		Name:    "policies",
		Version: Version,
		Types: []sdk.Type{
			meshType,
			meshTrafficPermissionType,
			meshTimeoutType,
			meshRetryType,
			meshRateLimitType,
		},
	}
}

func main() { sdk.Serve(plugin()) }
