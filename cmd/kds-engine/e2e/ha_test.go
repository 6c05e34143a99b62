package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kds-engine/kds-engine/engine"
	"github.com/kds-engine/kds-engine/internal/testsupport/pgtest"
)

// pgReplicas starts n global processes with `--store postgres` on one new
// database. They share what docs/configuration.md#postgresql says replicas
// must share besides the database: the zone token signing key and the
// cluster id, created in replica 1's data dir and copied to the others
// before any starts. Replica i has the replica id "gi". Replica 1 starts
// first (it creates the schema), the others after it. The cluster's global
// is replica 1.
func pgReplicas(t *testing.T, n int) (*cluster, []*node) {
	t.Helper()
	url := pgtest.NewDatabase(t)
	dir := t.TempDir()
	ca, cert, key, _, err := engine.GenerateDemoPKI(filepath.Join(dir, "pki"), nil)
	require.NoError(t, err)
	c := &cluster{dir: dir, pki: pki{ca: ca, cert: cert, key: key}, zones: map[string]*node{}}
	first := filepath.Join(dir, "global-1")
	require.NoError(t, os.MkdirAll(first, 0o700))
	// Creates the signing key and the cluster id in first.
	_, err = engine.GenerateZoneToken(first, "", "", "probe", time.Minute)
	require.NoError(t, err)
	var gs []*node
	for i := 1; i <= n; i++ {
		g := &node{name: "global", dataDir: filepath.Join(dir, fmt.Sprintf("global-%d", i))}
		if i > 1 {
			copyTree(t, first, g.dataDir)
		}
		g.args = []string{"global", "--data-dir", g.dataDir, "--plugins-dir", pluginsDir,
			"--tls-cert-file", cert, "--tls-key-file", key, "--store", "postgres", "--postgres-url", url,
			"--replica-id", fmt.Sprintf("g%d", i)}
		c.start(t, g, true)
		gs = append(gs, g)
	}
	c.global = gs[0]
	return c, gs
}

// zoneOn starts zone with `--global` listing the replicas in the order
// given (the first is where it connects) and waits until it is connected.
func (c *cluster) zoneOn(t *testing.T, zone string, replicas ...*node) *node {
	t.Helper()
	return c.zoneProc(t, zone, zone, nil, replicas...)
}

// zoneProc is zoneOn with the data dir named dir (a second process of the
// same zone needs one of its own) and extra flags.
func (c *cluster) zoneProc(t *testing.T, zone, dir string, extra []string, replicas ...*node) *node {
	t.Helper()
	tok, err := engine.GenerateZoneToken(c.global.dataDir, "", "", zone, time.Hour)
	require.NoError(t, err)
	addrs := make([]string, len(replicas))
	for i, g := range replicas {
		addrs[i] = addr(g.kdsPort)
	}
	z := &node{name: zone, dataDir: filepath.Join(c.dir, dir)}
	require.NoError(t, os.MkdirAll(z.dataDir, 0o700))
	z.args = []string{"zone", "--name", zone, "--global", strings.Join(addrs, ","),
		"--data-dir", z.dataDir, "--plugins-dir", pluginsDir,
		"--ca-file", c.pki.ca, "--token-file", writeFile(t, c.dir, zone+".token", tok),
		"--reconnect-backoff-base", "100ms", "--reconnect-backoff-max", "1s"}
	z.args = append(z.args, extra...)
	c.zones[dir] = z
	c.start(t, z, true)
	return z
}

// globalPolicies are the resources examples/demo/global.yaml writes, as
// `get` names them.
var globalPolicies = map[string]string{
	"Mesh": "default", "MeshTimeout": "default/web-timeouts",
	"MeshTrafficPermission": "default/allow-frontend", "MeshRetry": "default/web-retries",
}

// holdsPolicies reports whether n holds every resource of global.yaml.
func holdsPolicies(t *testing.T, n *node) (bool, string) {
	t.Helper()
	var missing []string
	for typ, name := range globalPolicies {
		got := names(list(t, n.api(), typ))
		if len(got) != 1 || got[0] != name {
			missing = append(missing, fmt.Sprintf("%s %s (have %v)", typ, name, got))
		}
	}
	sort.Strings(missing)
	return len(missing) == 0, strings.Join(missing, "; ")
}

// TestThreeReplicasTwoZones: three global replicas on one PostgreSQL
// database; zone-a is attached to replica 2 and zone-b to replica 3 (each
// zone lists its replica first). A write on replica 1, which no zone is
// attached to, reaches both zones; each zone's dataplanes appear in the
// `get` output of all three replicas, attributed to their zone.
func TestThreeReplicasTwoZones(t *testing.T) {
	c, g := pgReplicas(t, 3)
	za := c.zoneOn(t, "zone-a", g[1], g[0], g[2])
	zb := c.zoneOn(t, "zone-b", g[2], g[0], g[1])
	assert.Equal(t, addr(g[1].kdsPort), zoneSync(t, za).Address, "zone-a is on replica 2")
	assert.Equal(t, addr(g[2].kdsPort), zoneSync(t, zb).Address, "zone-b is on replica 3")
	// Every replica shows both zones online, each on its replica (from the
	// session leases in the database).
	for i, r := range g {
		waitFor(t, fmt.Sprintf("replica %d shows zone-a on g2 and zone-b on g3", i+1), func() (bool, string) {
			a, b := zoneOnGlobal(t, r, "zone-a"), zoneOnGlobal(t, r, "zone-b")
			return a.Online && a.Replica == "g2" && b.Online && b.Replica == "g3", fmt.Sprintf("%+v %+v", a, b)
		})
	}

	r := mustCLI(t, "apply", "-f", examplesFile(t, "global.yaml"), "--api", g[0].api())
	require.Contains(t, r.stdout, "4 resources applied: 4 created")
	for _, z := range []*node{za, zb} {
		waitFor(t, "global.yaml on "+z.name, func() (bool, string) { return holdsPolicies(t, z) })
	}
	mt, ok := find(list(t, za.api(), "MeshTimeout"), "web-timeouts", "")
	require.True(t, ok)
	assert.Equal(t, "5s", connectionTimeout(mt))
	onG1, _ := find(list(t, g[0].api(), "MeshTimeout"), "web-timeouts", "")
	assert.Equal(t, onG1.Version, mt.Version, "the zone holds the version replica 1 assigned")

	mustCLI(t, "apply", "-f", examplesFile(t, "zone-1.yaml"), "--api", za.api())
	mustCLI(t, "apply", "-f", examplesFile(t, "zone-2.yaml"), "--api", zb.api())
	want := []string{"zone-a/default/frontend-1", "zone-a/default/web-1", "zone-b/default/web-1"}
	for i, r := range g {
		waitFor(t, fmt.Sprintf("both zones' dataplanes on replica %d", i+1), func() (bool, string) {
			got := names(list(t, r.api(), "Dataplane"))
			sort.Strings(got)
			return assert.ObjectsAreEqual(want, got), fmt.Sprint(got)
		})
	}

	// A change on replica 3 reaches the zone on replica 2.
	mustCLI(t, "apply", "-f", writeFile(t, c.dir, "changed.yaml", changedTimeout), "--api", g[2].api())
	waitFor(t, "the change made on replica 3 on zone-a", func() (bool, string) {
		mt, ok := find(list(t, za.api(), "MeshTimeout"), "web-timeouts", "")
		return ok && connectionTimeout(mt) == "7s", connectionTimeout(mt)
	})
}

// TestReplicaSIGKILLZoneFailsOverResendsNothing: a zone with current state
// on replica 2 of three; replica 2 is killed with SIGKILL; the zone moves
// to the next replica in its list, is resent no unchanged resource and
// resends none (per the new replica's and the zone's own insights, read
// through the real processes' admin APIs), and the replica it moved to
// shows it online within 30 s of the kill.
func TestReplicaSIGKILLZoneFailsOverResendsNothing(t *testing.T) {
	c, g := pgReplicas(t, 3)
	mustCLI(t, "apply", "-f", examplesFile(t, "global.yaml"), "--api", g[0].api())
	z := c.zoneOn(t, "zone-1", g[1], g[2], g[0])
	mustCLI(t, "apply", "-f", examplesFile(t, "zone-1.yaml"), "--api", z.api())
	waitFor(t, "global.yaml on zone-1", func() (bool, string) { return holdsPolicies(t, z) })
	for i, r := range g {
		waitFor(t, fmt.Sprintf("zone-1's dataplanes on replica %d", i+1), func() (bool, string) {
			got := names(list(t, r.api(), "Dataplane"))
			return len(got) == 2, fmt.Sprint(got)
		})
	}
	var before syncState
	waitFor(t, "zone-1 current on replica 2", func() (bool, string) {
		before = zoneSync(t, z)
		on := zoneOnGlobal(t, g[1], "zone-1")
		return before.Online && before.Address == addr(g[1].kdsPort) &&
			totalReceived(before) == 4 && on.Types["Dataplane"].ResourcesReceived == 2, fmt.Sprintf("zone %+v global %+v", before, on)
	})

	g[1].p.kill9(t)
	killed := time.Now()
	var after, onG3 syncState
	waitWithin(t, 30*time.Second, "zone-1 online on replica 3, both directions answered", func() (bool, string) {
		after = zoneSync(t, z)
		onG3 = zoneOnGlobal(t, g[2], "zone-1")
		return after.Online && after.Address == addr(g[2].kdsPort) && onG3.Online &&
				onG3.Types["MeshTimeout"].ResponsesAcked >= 1 && onG3.Types["Dataplane"].ResponsesAcked >= 1,
			fmt.Sprintf("zone %+v replica 3 %+v", after, onG3)
	})
	resynced := time.Since(killed)
	t.Logf("zone-1 re-synced on replica 3 %s after replica 2 was killed", resynced.Round(time.Millisecond))
	assert.Contains(t, after.LastError, "global at "+addr(g[1].kdsPort), "the zone names the replica it lost")
	assert.Equal(t, totalReceived(before), totalReceived(after), "the zone was resent nothing: %+v", after.Types)
	assert.Zero(t, totalSent(onG3), "replica 3 sent zone-1 nothing: %+v", onG3.Types)
	assert.Zero(t, totalReceived(onG3), "zone-1 resent replica 3 nothing: %+v", onG3.Types)

	// The surviving replicas agree where the zone is (session leases).
	for _, r := range []*node{g[0], g[2]} {
		waitWithin(t, time.Until(killed.Add(30*time.Second)), "replica "+r.args[len(r.args)-1]+" shows zone-1 online on g3 (30 s after the kill)", func() (bool, string) {
			s := zoneOnGlobal(t, r, "zone-1")
			return s.Online && s.Replica == "g3", fmt.Sprintf("%+v", s)
		})
	}

	// Sync goes on through replica 3, also for writes made on replica 1.
	mustCLI(t, "apply", "-f", writeFile(t, c.dir, "changed.yaml", changedTimeout), "--api", g[0].api())
	waitFor(t, "a write on replica 1 reaches zone-1 on replica 3", func() (bool, string) {
		mt, ok := find(list(t, z.api(), "MeshTimeout"), "web-timeouts", "")
		return ok && connectionTimeout(mt) == "7s", connectionTimeout(mt)
	})
	after = zoneSync(t, z)
	assert.Equal(t, totalReceived(before)+1, totalReceived(after), "exactly the changed resource was sent")
}

// TestReplicaFrozenZoneFailsOverAfterKeepalive: the replica a zone is on
// stops answering without closing its connections (SIGSTOP, as a machine
// that vanishes from the network); the zone's keepalive (defaults: a ping
// after 10s idle, 10s for its answer) ends the session, and the zone
// resumes on the next replica with nothing resent.
func TestReplicaFrozenZoneFailsOverAfterKeepalive(t *testing.T) {
	c, g := pgReplicas(t, 2)
	mustCLI(t, "apply", "-f", examplesFile(t, "global.yaml"), "--api", g[0].api())
	z := c.zoneOn(t, "zone-1", g[0], g[1])
	waitFor(t, "global.yaml on zone-1", func() (bool, string) { return holdsPolicies(t, z) })
	var before syncState
	waitFor(t, "zone-1 current on replica 1", func() (bool, string) {
		before = zoneSync(t, z)
		return before.Online && before.Address == addr(g[0].kdsPort) && totalReceived(before) == 4, fmt.Sprintf("%+v", before)
	})

	require.NoError(t, g[0].p.cmd.Process.Signal(syscall.SIGSTOP))
	frozen := time.Now()
	var after syncState
	waitFor(t, "zone-1 on replica 2", func() (bool, string) {
		after = zoneSync(t, z)
		on := zoneOnGlobal(t, g[1], "zone-1")
		return after.Online && after.Address == addr(g[1].kdsPort) && on.Types["MeshTimeout"].ResponsesAcked >= 1, fmt.Sprintf("%+v", after)
	})
	t.Logf("zone-1 re-synced on replica 2 %s after replica 1 was frozen", time.Since(frozen).Round(time.Millisecond))
	assert.Equal(t, totalReceived(before), totalReceived(after), "the zone was resent nothing: %+v", after.Types)
	assert.Zero(t, totalSent(zoneOnGlobal(t, g[1], "zone-1")), "replica 2 sent zone-1 nothing")
}

// TestOlderSessionOnAnotherReplicaIsReplacedAndFenced: zone-1 has a
// session on replica 1, which freezes (SIGSTOP: its sockets stay open). A
// second zone-1 process connects to replica 2, whose session replaces the
// first. The first process then changes a dataplane; the change reaches
// replica 1's socket (its receive queue grows) and the process is frozen
// too, so that it cannot reconnect. Once replica 1 runs again it ends its
// session with the reason replaced (kds_sessions_ended_total on its
// /metrics) and the change is not stored: every replica shows zone-1's
// dataplanes as the second process holds them. (Checked by hand: without
// the lease notification the change is refused by the store fence, "session
// fenced off by a newer session"; without both, the test fails.)
func TestOlderSessionOnAnotherReplicaIsReplacedAndFenced(t *testing.T) {
	c, g := pgReplicas(t, 2)
	mustCLI(t, "apply", "-f", examplesFile(t, "global.yaml"), "--api", g[0].api())
	// Its keepalive must not end the session while replica 1 is frozen.
	old := c.zoneProc(t, "zone-1", "zone-1-old", []string{"--keepalive-time", "10m"}, g[0])
	waitFor(t, "global.yaml on the first zone-1", func() (bool, string) { return holdsPolicies(t, old) })
	mustCLI(t, "apply", "-f", examplesFile(t, "zone-1.yaml"), "--api", old.api())
	for i, r := range g {
		waitFor(t, fmt.Sprintf("zone-1's dataplanes on replica %d", i+1), func() (bool, string) {
			got := names(list(t, r.api(), "Dataplane"))
			return len(got) == 2, fmt.Sprint(got)
		})
	}
	waitFor(t, "zone-1 online on g1", func() (bool, string) {
		s := zoneOnGlobal(t, g[1], "zone-1")
		return s.Online && s.Replica == "g1", fmt.Sprintf("%+v", s)
	})

	require.NoError(t, g[0].p.cmd.Process.Signal(syscall.SIGSTOP))
	queued := receiveQueue(t, g[0].kdsPort)
	nw := c.zoneProc(t, "zone-1", "zone-1-new", nil, g[1])
	waitFor(t, "the second zone-1 process holds global.yaml", func() (bool, string) { return holdsPolicies(t, nw) })
	mustCLI(t, "apply", "-f", examplesFile(t, "zone-2.yaml"), "--api", nw.api())
	waitFor(t, "replica 2 shows zone-1 on g2 with the second process's dataplane", func() (bool, string) {
		s := zoneOnGlobal(t, g[1], "zone-1")
		web, ok := find(list(t, g[1].api(), "Dataplane"), "web-1", "zone-1")
		return s.Online && s.Replica == "g2" && ok && dataplaneAddress(web) == "10.0.2.10", fmt.Sprintf("%+v %v", s, web.Spec)
	})

	// The first process, still attached to frozen replica 1, changes a
	// dataplane; the change is in replica 1's socket before the process
	// freezes too.
	mustCLI(t, "apply", "-f", writeFile(t, c.dir, "late.yaml", lateDataplane), "--api", old.api())
	waitFor(t, "the late change in replica 1's receive queue", func() (bool, string) {
		n := receiveQueue(t, g[0].kdsPort)
		return n > queued+100, fmt.Sprintf("%d bytes queued, %d before", n, queued)
	})
	require.NoError(t, old.p.cmd.Process.Signal(syscall.SIGSTOP))
	require.NoError(t, g[0].p.cmd.Process.Signal(syscall.SIGCONT))

	waitFor(t, "replica 1 ended its zone-1 session as replaced", func() (bool, string) {
		code, body, err := httpGet(g[0].api() + "/metrics")
		if err != nil || code != 200 {
			return false, fmt.Sprint(code, err)
		}
		return metricValue(body, "kds_sessions_ended_total", `reason="replaced"`, `zone="zone-1"`) >= 1, grepLines(body, "kds_sessions_ended_total")
	})
	s := zoneOnGlobal(t, g[0], "zone-1")
	// Replica 1 learns of the newer session from the lease notification or,
	// if it reads the late change first, from the fence in the change's
	// commit; either ends the session as replaced.
	assert.Regexp(t, `replaced by a newer session on global replica g2|session fenced off by a newer session`, s.LastError,
		"replica 1's view of its own ended session")
	for i, r := range g {
		rs := list(t, r.api(), "Dataplane")
		web, ok := find(rs, "web-1", "zone-1")
		assert.True(t, ok, "replica %d: %v", i+1, names(rs))
		assert.Equal(t, "10.0.2.10", dataplaneAddress(web), "replica %d holds the second process's web-1, not the replaced session's late change", i+1)
		assert.Equal(t, []string{"zone-1/default/web-1"}, names(rs), "replica %d: zone-1's dataplanes are the second process's", i+1)
		s := zoneOnGlobal(t, r, "zone-1")
		assert.True(t, s.Online && s.Replica == "g2", "replica %d: %+v", i+1, s)
	}
}

// lateDataplane changes web-1 as the replaced session's process holds it.
const lateDataplane = `type: Dataplane
mesh: default
name: web-1
networking:
  address: 10.9.9.9
  inbound:
    - port: 8080
      tags: {kuma.io/service: web, version: v1}
`

// dataplaneAddress is spec.networking.address of a Dataplane.
func dataplaneAddress(r resource) string {
	n, _ := r.Spec["networking"].(map[string]any)
	a, _ := n["address"].(string)
	return a
}

// receiveQueue sums the unread bytes of the established loopback TCP
// connections whose local port is port (from /proc/net/tcp): what a
// stopped server has been sent and not read.
func receiveQueue(t *testing.T, port int) int {
	t.Helper()
	b, err := os.ReadFile("/proc/net/tcp")
	require.NoError(t, err)
	local := fmt.Sprintf(":%04X", port)
	total := 0
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 5 || !strings.HasSuffix(f[1], local) || f[3] != "01" {
			continue
		}
		_, rx, ok := strings.Cut(f[4], ":")
		require.True(t, ok, line)
		n, err := strconv.ParseInt(rx, 16, 64)
		require.NoError(t, err, line)
		total += int(n)
	}
	return total
}

// metricValue returns the value of the first sample of name whose labels
// include every one of labels (0 if none).
func metricValue(body, name string, labels ...string) float64 {
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, name+"{") {
			continue
		}
		all := true
		for _, l := range labels {
			all = all && strings.Contains(line, l)
		}
		if !all {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err == nil {
			return v
		}
	}
	return 0
}

// grepLines returns the lines of body that start with prefix.
func grepLines(body, prefix string) string {
	var out []string
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, prefix) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

func totalReceived(s syncState) (n uint64) {
	for _, ts := range s.Types {
		n += ts.ResourcesReceived
	}
	return n
}

func totalSent(s syncState) (n uint64) {
	for _, ts := range s.Types {
		n += ts.ResourcesSent
	}
	return n
}

// waitWithin is waitFor with its own deadline d, for conditions the
// documentation promises within d.
func waitWithin(t *testing.T, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after %s: %s", what, d, why)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestReplicaWithoutSharedTrustRefusesToStart: a second replica started on
// the database the first one uses, with a data dir that lacks the cluster
// id and the zone token signing key (nothing copied, no --cluster-id), does
// not make up its own, which would refuse every zone token the first
// replica accepts once zones fail over to it: it exits 1 naming the
// missing files and what to copy, and creates neither. With the files
// copied as docs/ha.md says, it starts.
func TestReplicaWithoutSharedTrustRefusesToStart(t *testing.T) {
	c, g := pgReplicas(t, 1)
	mustCLI(t, "apply", "-f", examplesFile(t, "global.yaml"), "--api", g[0].api())

	second := &node{name: "global", dataDir: filepath.Join(c.dir, "global-2")}
	second.args = append([]string(nil), g[0].args...)
	for i, a := range second.args {
		switch {
		case a == g[0].dataDir:
			second.args[i] = second.dataDir
		case a == "g1":
			second.args[i] = "g2"
		}
	}
	p := startProc(t, "global-2", append(second.args, "--api-addr", addr(freePort(t)), "--kds-addr", addr(freePort(t)))...)
	code := p.wait(t, 30*time.Second)
	out := p.stderr.String()
	assert.Equal(t, 1, code, out)
	for _, want := range []string{
		filepath.Join(second.dataDir, "cluster-id"), filepath.Join(second.dataDir, "zone-token-signing.key"),
		"is already used by global replicas", "Copy cluster-id and zone-token-signing.key from another replica's data dir",
	} {
		assert.Contains(t, out, want)
	}
	for _, f := range []string{"cluster-id", "zone-token-signing.key"} {
		_, err := os.Stat(filepath.Join(second.dataDir, f))
		assert.ErrorIs(t, err, os.ErrNotExist, "%s not created by the refused start", f)
	}

	require.NoError(t, os.MkdirAll(second.dataDir, 0o700))
	for _, f := range []string{"cluster-id", "zone-token-signing.key"} {
		b, err := os.ReadFile(filepath.Join(g[0].dataDir, f))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(second.dataDir, f), b, 0o600))
	}
	c.start(t, second, true)
	z := c.zoneOn(t, "zone-1", second)
	waitFor(t, "global.yaml on zone-1 through the second replica", func() (bool, string) { return holdsPolicies(t, z) })
}
