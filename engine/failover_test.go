package engine

import (
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kds-engine/kds-engine/engine/internal/resource"
	"github.com/kds-engine/kds-engine/engine/internal/tlsutil"
)

// freeAddr is a loopback address nothing listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := lis.Addr().String()
	require.NoError(t, lis.Close())
	return addr
}

// zoneGlobal is the zone's sync state entry for global, as /api/v1/sync
// shows it.
func zoneGlobal(z *node) (c struct {
	Online          bool
	Address, Error  string
	MeshTimeoutRecv uint64
	MeshTimeoutACK  uint64
}) {
	for _, x := range z.b().Insights() {
		if x.Name == GlobalPeer {
			c.Online, c.Address, c.Error = x.Online, x.Address, x.LastError
			c.MeshTimeoutRecv = x.Types["MeshTimeout"].ResourcesReceived
			c.MeshTimeoutACK = x.Types["MeshTimeout"].ResponsesACKed
		}
	}
	return c
}

// A zone attached to global replica 1 fails over to replica 2, which holds
// the same content, when replica 1 stops: it resumes with the versions it
// holds, so neither side resends an unchanged resource, and its sync state
// names the replica it is on.
func TestZoneFailsOverToAnotherGlobalAndIsResentNothing(t *testing.T) {
	g1 := startGlobal(t, builtinDir)
	create(t, g1, &resource.Resource{Type: "Mesh", Name: "default", Spec: spec(map[string]any{})})
	for i := range 20 {
		create(t, g1, meshTimeout(fmt.Sprintf("t-%d", i), "5s"))
	}
	p1 := portOf(g1.e.KDSAddr().String())
	addr2 := freeAddr(t) // replica 2's, started later
	p2 := portOf(addr2)

	cfg := zoneConfig(t, "zone-1", g1, Config{PluginsDir: builtinDir})
	// Host names, as operators write them: each counts as every address
	// it resolves to, and TLS verifies "localhost" at each.
	cfg.GlobalAddress = "localhost:" + p1 + ",localhost:" + p2
	z := startNode(t, cfg)
	create(t, z, dataplane("web-1", "10.0.0.1"))
	eventually(t, func() bool { return len(list(z, "MeshTimeout")) == 20 }, "initial sync")
	eventually(t, func() bool { return zoneType(g1, "zone-1", "Dataplane").ResourcesReceived == 1 }, "dataplane up")

	// Replica 2 gets a copy of replica 1's store, signing key and cluster
	// id (taken while replica 1 is stopped), as replicas on one database
	// would share them.
	dir1, dir2 := g1.e.cfg.DataDir, t.TempDir()
	g1 = restartGlobal(t, g1, func() { copyDir(t, dir1, dir2) })
	g2 := startNode(t, Config{Role: RoleGlobal, PluginsDir: builtinDir, DataDir: dir2, KDSAddress: addr2})
	eventually(t, func() bool { c, _ := g1.e.Insights().Get("zone-1"); return c.Online }, "zone back on replica 1")
	eventually(t, func() bool { return zoneGlobal(z).Online && zoneGlobal(z).MeshTimeoutACK >= 2 }, "zone resumed on replica 1")
	before := zoneGlobal(z)
	assert.Equal(t, "127.0.0.1:"+p1, before.Address, "the zone is on replica 1")
	require.NoError(t, z.b().Ready())

	stopping := time.Now()
	g1.stop()
	eventually(t, func() bool { c, _ := g2.e.Insights().Get("zone-1"); return c.Online }, "zone online on replica 2")
	t.Logf("zone online on replica 2 %s after replica 1 was told to stop (its graceful shutdown included)", time.Since(stopping).Round(time.Millisecond))
	eventually(t, func() bool {
		return zoneType(g2, "zone-1", "MeshTimeout").ResponsesACKed >= 1 && zoneType(g2, "zone-1", "Dataplane").ResponsesACKed >= 1
	}, "both directions answered on replica 2")
	after := zoneGlobal(z)
	assert.True(t, after.Online)
	assert.Equal(t, "127.0.0.1:"+p2, after.Address, "the sync state names replica 2")
	assert.Contains(t, after.Error, "global at localhost:"+p1, "the last error names the replica that was lost")
	assert.Equal(t, before.MeshTimeoutRecv, after.MeshTimeoutRecv, "the zone received no MeshTimeout again")
	assert.Zero(t, zoneType(g2, "zone-1", "MeshTimeout").ResourcesSent, "replica 2 resent no policy")
	assert.Zero(t, zoneType(g2, "zone-1", "Dataplane").ResourcesReceived, "the zone resent no dataplane")
	require.NoError(t, z.b().Ready())

	// Sync goes on through replica 2.
	create(t, g2, meshTimeout("after-failover", "6s"))
	eventually(t, func() bool {
		return find(z, resource.Key{Type: "MeshTimeout", Mesh: "default", Name: "after-failover"}) != nil
	},
		"a write on replica 2 reaches the zone")
}

// A zone whose every global address is dead says which address it tried
// and why, in /readyz and in its sync state.
func TestZoneNotReadyNamesTheAddressTried(t *testing.T) {
	g := startGlobal(t, builtinDir)
	a, b := freeAddr(t), freeAddr(t)
	cfg := zoneConfig(t, "zone-1", g, Config{PluginsDir: builtinDir})
	cfg.GlobalAddress = a + "," + b
	z := startNode(t, cfg)
	eventually(t, func() bool { return z.b().Ready() != nil && zoneGlobal(z).Error != "" }, "an attempt failed")
	err := z.b().Ready()
	require.Error(t, err)
	assert.Regexp(t, `^not connected to global at (`+a+`|`+b+`): open stream: `, err.Error())
	c := zoneGlobal(z)
	assert.False(t, c.Online)
	assert.Contains(t, []string{a, b}, c.Address)
	// The error is the last failed attempt's; Address may already be the
	// next one being tried.
	assert.Regexp(t, `global at (`+a+`|`+b+`): `, c.Error)
}

// Global's certificate names only a DNS name and the zone dials an IP
// address: the zone verifies the name set as TLSServerName, and without it
// refuses the certificate, saying for which address.
func TestZoneTLSServerNameOverride(t *testing.T) {
	pki, err := tlsutil.GeneratePKI(filepath.Join(t.TempDir(), "pki"), []string{"global.kds.test"}, nil)
	require.NoError(t, err)
	g := startNode(t, Config{Role: RoleGlobal, PluginsDir: builtinDir, TLSCertFile: pki.Server.CertFile, TLSKeyFile: pki.Server.KeyFile})
	ip := g.e.KDSAddr().String() // 127.0.0.1:PORT

	cfg := zoneConfig(t, "zone-1", g, Config{PluginsDir: builtinDir, CAFile: pki.CAFile, TLSServerName: "global.kds.test"})
	cfg.GlobalAddress = ip
	z := startNode(t, cfg)
	eventually(t, func() bool { return z.b().Ready() == nil }, "zone connected, verifying global.kds.test at %s", ip)
	assert.Equal(t, ip, zoneGlobal(z).Address)

	cfg = zoneConfig(t, "zone-2", g, Config{PluginsDir: builtinDir, CAFile: pki.CAFile})
	cfg.GlobalAddress = ip
	z2 := startNode(t, cfg)
	eventually(t, func() bool { return zoneGlobal(z2).Error != "" }, "an attempt failed")
	c := zoneGlobal(z2)
	assert.False(t, c.Online)
	assert.Contains(t, c.Error, "global at "+ip)
	assert.Contains(t, c.Error, "cannot validate certificate for 127.0.0.1")
}

func TestZoneConfigRefusesBadGlobalAddressList(t *testing.T) {
	_, err := New(Config{Role: RoleZone, ZoneName: "zone-a", GlobalAddress: "g1:5685,,g2:5685", DataDir: t.TempDir()}, nil)
	require.Error(t, err)
	assert.Equal(t, `global address: entry 2 of "g1:5685,,g2:5685" is empty (want HOST:PORT entries separated by single commas)`, err.Error())
}
