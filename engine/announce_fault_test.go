package engine

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	"github.com/kds-engine/kds-engine/engine/internal/kdsgrpc"
	"github.com/kds-engine/kds-engine/engine/internal/kdssync"
	"github.com/kds-engine/kds-engine/engine/internal/resource"
	"github.com/kds-engine/kds-engine/engine/internal/testsupport/logbuf"
	kdsv1 "github.com/kds-engine/kds-engine/proto/kds/v1"
)

// The session announcement: each side announces its type count and max
// message size when a session starts, and both size the session from both.

// logTo returns an Info logger writing to a buffer.
func logTo() (hclog.Logger, *logbuf.Buffer) {
	buf := &logbuf.Buffer{}
	return hclog.New(&hclog.LoggerOptions{Name: "test", Level: hclog.Info, Output: buf}), buf
}

// seriesSum adds up every series of metric name on n whose labels include
// labels.
func seriesSum(t *testing.T, n *node, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := n.e.promReg.Gather()
	require.NoError(t, err)
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue series
				}
			}
			if c := m.GetCounter(); c != nil {
				sum += c.GetValue()
			} else {
				sum += m.GetGauge().GetValue()
			}
		}
	}
	return sum
}

// syncRes is a synctest resource of typ whose spec is padded to about pad
// bytes.
func syncRes(typ, name string, pad int) *resource.Resource {
	return &resource.Resource{Type: typ, Mesh: "default", Name: name,
		Spec: spec(map[string]any{"value": name, "pad": strings.Repeat("p", pad)})}
}

// assertOneSession checks that zone's first session to g is its only one
// and that neither side counted a session end.
func assertOneSession(t *testing.T, g, z *node, zone string) {
	t.Helper()
	gc, ok := g.e.Insights().Get(zone)
	require.True(t, ok)
	assert.True(t, gc.Online, "global: zone online (%s)", gc.LastError)
	assert.Equal(t, uint64(1), gc.Sessions, "global: one session of the zone, no reconnect (last error %q)", gc.LastError)
	zc, ok := z.e.Insights().Get(GlobalPeer)
	require.True(t, ok)
	assert.Equal(t, uint64(1), zc.Sessions, "zone: one session to global (last error %q)", zc.LastError)
	assert.Empty(t, zc.LastError, "zone: no session ended or was refused")
	assert.Zero(t, seriesSum(t, g, "kds_sessions_ended_total", map[string]string{"zone": zone}), "global counted no session end")
	assert.Zero(t, seriesSum(t, z, "kds_sessions_ended_total", map[string]string{"zone": GlobalPeer}), "the zone counted no session end")
	assert.Equal(t, float64(1), seriesSum(t, g, "kds_sessions_started_total", map[string]string{"zone": zone}))
}

// A global with 203 types (200 of them zone→global types the zone does not
// know) subscribes to all of them in its first burst, while both sides send
// enough to fill static 64 KiB flow-control windows. Sized from its own 3
// types the zone's served stream held 3 × 3 + 16 = 25 messages and the
// burst ended the session, again on every reconnect; sized from global's
// announced count, the one session converges.
func TestFaultGlobalWithManyMoreTypesThanZone(t *testing.T) {
	const n = 60
	g := startNode(t, Config{Role: RoleGlobal, PluginsDir: manyDir, InitialWindowSize: 64 << 10})
	for i := range n {
		create(t, g, syncRes("SyncPolicy", fmt.Sprintf("p-%03d", i), 16<<10))
	}
	const zone = "zone-few"
	z := startNode(t, zoneConfig(t, zone, g, Config{PluginsDir: lenientDir, InitialWindowSize: 64 << 10}))
	for i := range n {
		create(t, z, syncRes("SyncStatus", fmt.Sprintf("s-%03d", i), 16<<10))
	}
	eventually(t, func() bool {
		return len(list(z, "SyncPolicy")) == n && len(zoneResources(t, g, "SyncStatus", zone)) == n
	}, "both directions converge")
	// The zone answered every subscription, the unknown types included.
	eventually(t, func() bool {
		c, _ := g.e.Insights().Get(zone)
		return len(c.Types) >= 201
	}, "global subscribed to all its zone→global types")
	assertOneSession(t, g, z, zone)
	assert.Equal(t, 3, z.e.host.Registry().Len())
	assert.Equal(t, 203, g.e.host.Registry().Len())
}

// maxSent records, per peer, the largest message an engine sent it.
type maxSent struct {
	mu  sync.Mutex
	max map[string]int
}

func (m *maxSent) observe(peer string, n int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.max == nil {
		m.max = map[string]int{}
	}
	m.max[peer] = max(m.max[peer], n)
}

func (m *maxSent) get(peer string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.max[peer]
}

// With unequal max message sizes, each side sends at most the smaller one:
// resources of nearly 2 MiB (the most a 4 MiB side accepts as one
// resource) totalling several times 4 MiB cross both ways in one session,
// and no message larger than 4 MiB is sent. Packed up to the larger side's
// size, responses were refused by the smaller side's gRPC and the zone
// reconnected forever.
func TestFaultUnequalMaxMessageSizes(t *testing.T) {
	for _, tc := range []struct {
		name              string
		globalMax, zoneMx int
	}{
		{"global 8 MiB zone 4 MiB", 8 << 20, 4 << 20},
		{"global 4 MiB zone 8 MiB", 4 << 20, 8 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const n, pad = 10, 2<<20 - 8<<10
			smaller := min(tc.globalMax, tc.zoneMx)
			var gSent, zSent maxSent
			quiet := hclog.New(&hclog.LoggerOptions{Name: "test", Level: hclog.Warn, Output: os.Stderr})
			g := startNodePrepared(t, Config{Role: RoleGlobal, PluginsDir: lenientDir, MaxMessageSize: tc.globalMax, MaxResourceSize: 2 << 20},
				quiet, func(e *Engine) { e.observeSent = gSent.observe })
			for i := range n {
				create(t, g, syncRes("SyncPolicy", fmt.Sprintf("big-%02d", i), pad))
			}
			const zone = "zone-sized"
			zlog, zbuf := logTo()
			z := startNodePrepared(t, zoneConfig(t, zone, g, Config{PluginsDir: lenientDir, MaxMessageSize: tc.zoneMx, MaxResourceSize: 2 << 20}),
				zlog, func(e *Engine) { e.observeSent = zSent.observe })
			for i := range n {
				create(t, z, syncRes("SyncStatus", fmt.Sprintf("big-%02d", i), pad))
			}
			eventually(t, func() bool {
				return len(list(z, "SyncPolicy")) == n && len(zoneResources(t, g, "SyncStatus", zone)) == n
			}, "both directions converge")
			assertOneSession(t, g, z, zone)
			assert.LessOrEqual(t, gSent.get(zone), smaller, "global sent nothing larger than the smaller size")
			assert.LessOrEqual(t, zSent.get(GlobalPeer), smaller, "the zone sent nothing larger than the smaller size")
			assert.Greater(t, gSent.get(zone), 2<<20-16<<10, "the big resources went out")
			assert.Greater(t, zSent.get(GlobalPeer), 2<<20-16<<10, "the big resources went out")
			// The mismatch is logged once per session, with both figures and
			// what was agreed.
			logs := zbuf.String()
			assert.Equal(t, 1, strings.Count(logs, "session figures differ"), logs)
			assert.Contains(t, logs, "agreed_max_message_size="+strconv.Itoa(smaller))
			assert.Contains(t, logs, "peer_max_message_size="+strconv.Itoa(tc.globalMax))
		})
	}
}

// rawAnnouncing opens a raw KDS session for zone that announces md.
func rawAnnouncing(t *testing.T, g *node, zone string, md metadata.MD) kdsv1.KDS_SessionClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	md = metadata.Join(md, metadata.Pairs("kds-zone", zone, "authorization", "Bearer "+tokenFor(t, g, zone)))
	s, err := kdsv1.NewKDSClient(dialGlobal(t, g)).Session(metadata.NewOutgoingContext(ctx, md))
	require.NoError(t, err)
	return s
}

// Global refuses a zone announcing figures out of range, with
// InvalidArgument naming the header and the value; a zone announcing
// nothing (an older build) syncs; the honest zone is not disturbed.
func TestFaultGlobalRefusesInvalidAnnouncement(t *testing.T) {
	env := startHostileEnv(t, Config{})
	const zone = "zone-odd"
	for _, tc := range []struct{ key, value string }{
		{kdsgrpc.MaxMessageSizeMetadataKey, "0"},
		{kdsgrpc.MaxMessageSizeMetadataKey, "-1"},
		{kdsgrpc.MaxMessageSizeMetadataKey, "abc"},
		{kdsgrpc.MaxMessageSizeMetadataKey, strconv.Itoa(64<<20 + 1)},
		{kdsgrpc.TypesMetadataKey, "-1"},
		{kdsgrpc.TypesMetadataKey, "abc"},
		{kdsgrpc.TypesMetadataKey, "100001"},
	} {
		st := recvUntilErr(t, rawAnnouncing(t, env.g, zone, metadata.Pairs(tc.key, tc.value)))
		assert.Equal(t, codes.InvalidArgument, st.Code(), "%s=%s: %s", tc.key, tc.value, st.Message())
		assert.Contains(t, st.Message(), tc.key+" "+tc.value)
	}
	_, seen := env.g.e.Insights().Get(zone)
	assert.False(t, seen, "no refused session started")

	// Announcing nothing: a session that syncs.
	s := rawAnnouncing(t, env.g, zone, nil)
	sendResponse(t, s, kdssync.TypeURL("Dataplane"), "1", wireResource(t, dataplane("dp-1", "10.0.9.1"), "v-1"))
	require.Nil(t, awaitReply(t, s, "1").GetErrorDetail())
	assert.NotNil(t, find(env.g, resource.Key{Type: "Dataplane", Mesh: "default", Zone: zone, Name: "dp-1"}))
	env.assertHonestZoneSyncs(t)
}

// fakeGlobal answers every session with header over TLS and holds the
// stream until the zone ends it.
type fakeGlobal struct {
	kdsv1.UnimplementedKDSServer
	header   metadata.MD
	sessions atomic.Int32
}

func (f *fakeGlobal) Session(stream kdsv1.KDS_SessionServer) error {
	f.sessions.Add(1)
	if err := stream.SendHeader(f.header); err != nil {
		return err
	}
	for {
		if _, err := stream.Recv(); err != nil {
			return nil
		}
	}
}

// startFakeGlobal serves f on loopback with the test certificate and
// returns its port.
func startFakeGlobal(t *testing.T, f *fakeGlobal) string {
	t.Helper()
	creds, err := credentials.NewServerTLSFromFile(certFile, keyFile)
	require.NoError(t, err)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := grpc.NewServer(grpc.Creds(creds))
	kdsv1.RegisterKDSServer(srv, f)
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(lis) }()
	t.Cleanup(func() { srv.Stop(); <-done })
	return portOf(lis.Addr().String())
}

// A zone refuses a global announcing figures out of range: no session
// starts, and the error naming the header and the value is the zone's
// sync state (insights, /readyz) and in its log.
func TestFaultZoneRefusesInvalidAnnouncement(t *testing.T) {
	keyDir := t.TempDir()
	tok, err := GenerateZoneToken(keyDir, "", "", "zone-1", time.Hour)
	require.NoError(t, err)
	tokFile := filepath.Join(t.TempDir(), "zone.token")
	require.NoError(t, os.WriteFile(tokFile, []byte(tok), 0o600))
	for _, tc := range []struct{ key, value string }{
		{kdsgrpc.MaxMessageSizeMetadataKey, "0"},
		{kdsgrpc.MaxMessageSizeMetadataKey, "-1"},
		{kdsgrpc.MaxMessageSizeMetadataKey, "abc"},
		{kdsgrpc.MaxMessageSizeMetadataKey, strconv.Itoa(64<<20 + 1)},
		{kdsgrpc.TypesMetadataKey, "100001"},
	} {
		t.Run(tc.key+"="+tc.value, func(t *testing.T) {
			f := &fakeGlobal{header: metadata.Pairs(tc.key, tc.value)}
			port := startFakeGlobal(t, f)
			log, buf := logTo()
			z := startNodeLogging(t, Config{Role: RoleZone, ZoneName: "zone-1", GlobalAddress: "localhost:" + port,
				TokenFile: tokFile, PluginsDir: lenientDir}, log)
			want := tc.key + " " + tc.value
			eventually(t, func() bool {
				c, _ := z.e.Insights().Get(GlobalPeer)
				return strings.Contains(c.LastError, want)
			}, "the zone's sync state names the refused header")
			c, _ := z.e.Insights().Get(GlobalPeer)
			assert.Contains(t, c.LastError, "global's session header")
			assert.Zero(t, c.Sessions, "no session started")
			assert.False(t, c.Online)
			err := z.b().Ready()
			require.Error(t, err)
			assert.Contains(t, err.Error(), want)
			eventually(t, func() bool { return strings.Contains(buf.String(), want) }, "the zone's log names the refused header")
		})
	}

	t.Run("nothing announced", func(t *testing.T) {
		f := &fakeGlobal{header: metadata.Pairs("x-other", "1")}
		port := startFakeGlobal(t, f)
		z := startNode(t, Config{Role: RoleZone, ZoneName: "zone-1", GlobalAddress: "localhost:" + port,
			TokenFile: tokFile, PluginsDir: lenientDir})
		eventually(t, func() bool { return z.b().Ready() == nil }, "a global that announced nothing is accepted")
		c, _ := z.e.Insights().Get(GlobalPeer)
		assert.Equal(t, uint64(1), c.Sessions)
	})
}
