package engine

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/golang-jwt/jwt/v5"
	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/kds-engine/kds-engine/engine/internal/guard"
	"github.com/kds-engine/kds-engine/engine/internal/httpauth"
	"github.com/kds-engine/kds-engine/engine/internal/insights"
	"github.com/kds-engine/kds-engine/engine/internal/kdsauth"
	"github.com/kds-engine/kds-engine/engine/internal/kdssync"
	"github.com/kds-engine/kds-engine/engine/internal/metrics"
	"github.com/kds-engine/kds-engine/engine/internal/mux"
	"github.com/kds-engine/kds-engine/engine/internal/resource"
	"github.com/kds-engine/kds-engine/engine/internal/store"
	"github.com/kds-engine/kds-engine/engine/internal/store/memory"
	"github.com/kds-engine/kds-engine/engine/internal/tlsutil"
	"github.com/kds-engine/kds-engine/engine/internal/token"
	kdsv1 "github.com/kds-engine/kds-engine/proto/kds/v1"
)

// The hostile tests run one global and one honest zone, and attack global
// from hand-made clients that speak (or abuse) the KDS protocol directly.
// After every attack the honest zone must still sync both ways.

const (
	honestZone = "zone-honest"
	// hostileLimit is global's MaxResourcesPerZoneType in these tests.
	hostileLimit = 3
	// hostileMaxMsg is global's MaxMessageSize in these tests.
	hostileMaxMsg = 256 << 10
)

// hostileEnv is a global and an honest zone that keeps syncing.
type hostileEnv struct {
	g, honest *node
	round     int
}

func startHostileEnv(t *testing.T, globalCfg Config) *hostileEnv {
	t.Helper()
	globalCfg.Role, globalCfg.PluginsDir = RoleGlobal, builtinDir
	if globalCfg.MaxResourcesPerZoneType == 0 {
		globalCfg.MaxResourcesPerZoneType = hostileLimit
	}
	if globalCfg.MaxMessageSize == 0 {
		globalCfg.MaxMessageSize, globalCfg.MaxResourceSize = hostileMaxMsg, 64<<10
	}
	g := startNode(t, globalCfg)
	honest := startZone(t, honestZone, g, builtinDir, "")
	env := &hostileEnv{g: g, honest: honest}
	create(t, g, &resource.Resource{Type: "Mesh", Name: "default", Spec: spec(map[string]any{})})
	create(t, honest, dataplane("honest-dp", "10.0.0.1"))
	eventually(t, func() bool { return find(g, honestDPKey()) != nil }, "honest dataplane reaches global")
	eventually(t, func() bool { return len(list(honest, "Mesh")) == 1 }, "mesh reaches the honest zone")
	return env
}

func honestDPKey() resource.Key {
	return resource.Key{Type: "Dataplane", Mesh: "default", Zone: honestZone, Name: "honest-dp"}
}

// assertHonestZoneSyncs proves the honest zone is unaffected: a policy
// created on global now reaches it, its dataplane change reaches global, and
// its session to global was never interrupted.
func (env *hostileEnv) assertHonestZoneSyncs(t *testing.T) {
	t.Helper()
	env.round++
	mt := create(t, env.g, meshTimeout(fmt.Sprintf("after-attack-%d", env.round), "5s"))
	eventually(t, func() bool { return find(env.honest, mt.Key()) != nil }, "policy created after the attack reaches the honest zone")

	addr := fmt.Sprintf("10.0.1.%d", env.round)
	cur := find(env.honest, resource.Key{Type: "Dataplane", Mesh: "default", Name: "honest-dp"})
	require.NotNil(t, cur)
	upd := dataplane("honest-dp", addr)
	upd.Version = cur.Version
	_, err := env.honest.b().Update(context.Background(), upd)
	require.NoError(t, err)
	eventually(t, func() bool {
		r := find(env.g, honestDPKey())
		return r != nil && strings.Contains(string(r.Spec), addr)
	}, "the honest zone's dataplane change reaches global")
	c, ok := env.g.e.Insights().Get(honestZone)
	require.True(t, ok)
	assert.True(t, c.Online)
	assert.Equal(t, uint64(1), c.Sessions, "the honest zone's session was never interrupted")
}

// zoneResources lists global's resources of typ attributed to zone.
func zoneResources(t *testing.T, g *node, typ, zone string) []*resource.Resource {
	t.Helper()
	var out []*resource.Resource
	for _, r := range list(g, typ) {
		if r.Zone == zone {
			out = append(out, r)
		}
	}
	return out
}

// tokenFor signs a token for zone with g's signing key.
func tokenFor(t *testing.T, g *node, zone string) string {
	t.Helper()
	tok, err := GenerateZoneToken(g.e.cfg.DataDir, "", "", zone, time.Hour)
	require.NoError(t, err)
	return tok
}

// tlsCreds trusts the test CA and presents no client certificate.
func tlsCreds(t *testing.T) grpc.DialOption {
	t.Helper()
	tc, err := tlsutil.ClientConfig(caFile, "", "", "localhost", hclog.NewNullLogger())
	require.NoError(t, err)
	return grpc.WithTransportCredentials(credentials.NewTLS(tc))
}

// dialGlobal connects to g's KDS port with opts (TLS with the test CA unless
// opts has other transport credentials).
func dialGlobal(t *testing.T, g *node, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	if len(opts) == 0 {
		opts = []grpc.DialOption{tlsCreds(t)}
	}
	opts = append(opts, grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(64<<20)))
	conn, err := grpc.NewClient("localhost:"+portOf(g.e.KDSAddr().String()), opts...)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return conn
}

// rawSession opens a KDS session claiming zone with tok ("" sends no
// token). The stream ends with the test.
func rawSession(t *testing.T, conn *grpc.ClientConn, zone, tok string) kdsv1.KDS_SessionClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	md := metadata.Pairs("kds-zone", zone)
	if tok != "" {
		md.Append("authorization", "Bearer "+tok)
	}
	s, err := kdsv1.NewKDSClient(conn).Session(metadata.NewOutgoingContext(ctx, md))
	require.NoError(t, err)
	return s
}

// recvUntilErr reads until the stream fails and returns its status.
func recvUntilErr(t *testing.T, s kdsv1.KDS_SessionClient) *status.Status {
	t.Helper()
	for {
		_, err := s.Recv()
		if err != nil {
			require.NotErrorIs(t, err, io.EOF, "the RPC ends with an error status")
			return status.Convert(err)
		}
	}
}

// awaitReply reads the zone's inbound messages until global's answer to the
// response with nonce arrives (an ACK or NACK request), and returns it.
func awaitReply(t *testing.T, s kdsv1.KDS_SessionClient, nonce string) *discovery.DeltaDiscoveryRequest {
	t.Helper()
	for {
		m, err := s.Recv()
		require.NoError(t, err, "waiting for global's answer to nonce %s", nonce)
		if r := m.GetRequest(); r != nil && r.GetResponseNonce() == nonce {
			return r
		}
	}
}

// wireResource wraps r the way a zone sends it.
func wireResource(t *testing.T, r *resource.Resource, version string) *discovery.Resource {
	t.Helper()
	b, err := proto.Marshal(r.ToProto())
	require.NoError(t, err)
	return &discovery.Resource{
		Name:     kdssync.WireName(r.Mesh, r.Name),
		Version:  version,
		Resource: &anypb.Any{TypeUrl: "type.googleapis.com/kds.v1.Resource", Value: b},
	}
}

func sendResponse(t *testing.T, s kdsv1.KDS_SessionClient, typeURL, nonce string, rs ...*discovery.Resource) {
	t.Helper()
	require.NoError(t, s.Send(&kdsv1.Message{Kind: &kdsv1.Message_Response{Response: &discovery.DeltaDiscoveryResponse{
		TypeUrl: typeURL, Nonce: nonce, SystemVersionInfo: nonce, Resources: rs,
	}}}))
}

// refusedFor is global's count of zone sessions refused for reason.
func refusedFor(t *testing.T, g *node, reason string) float64 {
	return seriesValueOf(t, g, "kds_auth_refused_total", map[string]string{"reason": reason})
}

// requireGenericRefusal checks that st is what every refused client gets:
// Unauthenticated and a reference to global's log, no reason.
func requireGenericRefusal(t *testing.T, st *status.Status) {
	t.Helper()
	require.Equal(t, codes.Unauthenticated, st.Code(), st.Message())
	assert.Regexp(t, `^zone authentication failed \(ref [0-9a-f]{8}\); global's log has the reason$`, st.Message())
}

func requireAuthRefused(t *testing.T, env *hostileEnv, zone, tok, reason string) {
	t.Helper()
	before := refusedFor(t, env.g, reason)
	s := rawSession(t, dialGlobal(t, env.g), zone, tok)
	st := recvUntilErr(t, s)
	requireGenericRefusal(t, st)
	assert.Equal(t, before+1, refusedFor(t, env.g, reason), "refused for %s", reason)
	_, known := env.g.e.Insights().Get(zone)
	assert.False(t, known, "a refused session never reaches the sync: no insights for %s", zone)
	assert.Empty(t, zoneResources(t, env.g, "Dataplane", zone), "nothing written for %s", zone)
}

func TestHostileZoneAuthentication(t *testing.T) {
	env := startHostileEnv(t, Config{})
	key, err := token.LoadSigningKey(SigningKeyFile(env.g.e.cfg.DataDir, ""))
	require.NoError(t, err)

	t.Run("token for another zone", func(t *testing.T) {
		requireAuthRefused(t, env, "zone-thief", tokenFor(t, env.g, honestZone), "zone_mismatch")
		env.assertHonestZoneSyncs(t)
	})
	t.Run("expired token", func(t *testing.T) {
		iss, err := token.NewIssuer(key, clusterIDOf(t, env.g), token.WithIssuerClock(func() time.Time { return time.Now().Add(-2 * time.Hour) }))
		require.NoError(t, err)
		tok, err := iss.Generate("zone-late", time.Hour)
		require.NoError(t, err)
		requireAuthRefused(t, env, "zone-late", tok, "expired")
		env.assertHonestZoneSyncs(t)
	})
	t.Run("token signed by an unknown key", func(t *testing.T) {
		_, other, err := ed25519.GenerateKey(rand.Reader)
		require.NoError(t, err)
		iss, err := token.NewIssuer(other, clusterIDOf(t, env.g))
		require.NoError(t, err)
		tok, err := iss.Generate("zone-forged", time.Hour)
		require.NoError(t, err)
		requireAuthRefused(t, env, "zone-forged", tok, "unknown_key")
		env.assertHonestZoneSyncs(t)
	})
	t.Run("no token", func(t *testing.T) {
		requireAuthRefused(t, env, "zone-anon", "", "missing_token")
		env.assertHonestZoneSyncs(t)
	})
	t.Run("token for another global", func(t *testing.T) {
		// Same signing key (a copied key, a shared one), another cluster id.
		iss, err := token.NewIssuer(key, "other-global")
		require.NoError(t, err)
		tok, err := iss.Generate("zone-elsewhere", time.Hour)
		require.NoError(t, err)
		requireAuthRefused(t, env, "zone-elsewhere", tok, "wrong_audience")
		env.assertHonestZoneSyncs(t)
	})
	t.Run("token without an id cannot be revoked", func(t *testing.T) {
		c := jwt.RegisteredClaims{Issuer: token.IssuerName, Subject: "zone-noid", Audience: jwt.ClaimStrings{clusterIDOf(t, env.g)},
			IssuedAt: jwt.NewNumericDate(time.Now()), NotBefore: jwt.NewNumericDate(time.Now()), ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour))}
		for _, id := range []string{"", strings.Repeat("A", 32)} {
			c.ID = id
			j := jwt.NewWithClaims(jwt.SigningMethodEdDSA, c)
			j.Header["kid"] = token.KeyID(key.Public().(ed25519.PublicKey))
			tok, err := j.SignedString(key)
			require.NoError(t, err)
			requireAuthRefused(t, env, "zone-noid", tok, "malformed")
		}
		env.assertHonestZoneSyncs(t)
	})
	t.Run("claimed zone that is not a zone name", func(t *testing.T) {
		requireAuthRefused(t, env, strings.Repeat("Z", 40<<10), tokenFor(t, env.g, "zone-x"), "invalid_zone")
		env.assertHonestZoneSyncs(t)
	})
	t.Run("headers over the gRPC limit never reach authentication", func(t *testing.T) {
		before := 0.0
		for _, r := range kdsauth.Reasons {
			before += refusedFor(t, env.g, r)
		}
		s, err := kdsv1.NewKDSClient(dialGlobal(t, env.g)).Session(metadata.AppendToOutgoingContext(context.Background(),
			"kds-zone", strings.Repeat("z", 1<<20), "authorization", "Bearer "+tokenFor(t, env.g, "zone-big")))
		if err == nil {
			_, err = s.Recv()
		}
		require.Error(t, err, "a 1 MiB header is refused by the transport")
		after := 0.0
		for _, r := range kdsauth.Reasons {
			after += refusedFor(t, env.g, r)
		}
		assert.Equal(t, before, after, "nothing was parsed, counted or logged by authentication")
		env.assertHonestZoneSyncs(t)
	})
	t.Run("plaintext client against the TLS listener", func(t *testing.T) {
		conn := dialGlobal(t, env.g, grpc.WithTransportCredentials(insecure.NewCredentials()))
		ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(),
			"kds-zone", "zone-plain", "authorization", "Bearer "+tokenFor(t, env.g, "zone-plain")), 30*time.Second)
		defer cancel()
		s, err := kdsv1.NewKDSClient(conn).Session(ctx)
		if err == nil {
			_, err = s.Recv()
		}
		require.Error(t, err)
		assert.Equal(t, codes.Unavailable, status.Code(err), "no TLS handshake, no RPC: %v", err)
		_, known := env.g.e.Insights().Get("zone-plain")
		assert.False(t, known)
		env.assertHonestZoneSyncs(t)
	})
}

func TestHostileZonePayloads(t *testing.T) {
	env := startHostileEnv(t, Config{})
	dpURL := kdssync.TypeURL("Dataplane")

	t.Run("claims another zone's resource in the envelope", func(t *testing.T) {
		const zone = "zone-claim"
		s := rawSession(t, dialGlobal(t, env.g), zone, tokenFor(t, env.g, zone))
		before := find(env.g, honestDPKey())
		require.NotNil(t, before)
		claim := dataplane("honest-dp", "10.6.6.6")
		claim.Zone = honestZone // the payload says it is the honest zone's
		sendResponse(t, s, dpURL, "1", wireResource(t, claim, "evil-1"))
		ack := awaitReply(t, s, "1")
		assert.Nil(t, ack.GetErrorDetail(), "a well-formed response is accepted")

		after := find(env.g, honestDPKey())
		require.NotNil(t, after)
		assert.Equal(t, before.Version, after.Version, "the honest zone's resource is untouched")
		assert.NotContains(t, string(after.Spec), "10.6.6.6")
		got := zoneResources(t, env.g, "Dataplane", zone)
		require.Len(t, got, 1, "the resource is attributed to the authenticated zone")
		assert.Equal(t, "honest-dp", got[0].Name)
		assert.Contains(t, string(got[0].Spec), "10.6.6.6")

		// Deleting "the honest zone's" dataplane by wire name deletes only the
		// attacker's own.
		require.NoError(t, s.Send(&kdsv1.Message{Kind: &kdsv1.Message_Response{Response: &discovery.DeltaDiscoveryResponse{
			TypeUrl: dpURL, Nonce: "2", RemovedResources: []string{"default/honest-dp"},
		}}}))
		ack = awaitReply(t, s, "2")
		assert.Nil(t, ack.GetErrorDetail())
		assert.Empty(t, zoneResources(t, env.g, "Dataplane", zone))
		assert.NotNil(t, find(env.g, honestDPKey()), "the honest zone's dataplane survives")
		env.assertHonestZoneSyncs(t)
	})

	t.Run("pushes a GlobalToZone type", func(t *testing.T) {
		const zone = "zone-pusher"
		s := rawSession(t, dialGlobal(t, env.g), zone, tokenFor(t, env.g, zone))
		existing := create(t, env.g, meshTimeout("owned-by-global", "5s"))
		evil := meshTimeout("owned-by-global", "1ms")
		sendResponse(t, s, kdssync.TypeURL("MeshTimeout"), "1",
			wireResource(t, evil, "evil-1"), wireResource(t, meshTimeout("planted", "1ms"), "evil-1"))
		nack := awaitReply(t, s, "1")
		require.NotNil(t, nack.GetErrorDetail(), "NACKed")
		assert.Contains(t, nack.GetErrorDetail().GetMessage(), "response for type MeshTimeout, which this side never subscribed to")
		eventually(t, func() bool { return zoneType(env.g, zone, "MeshTimeout").ResponsesNACKed == 1 }, "NACK in global's insights")
		assert.Contains(t, zoneType(env.g, zone, "MeshTimeout").LastNACKError, "never subscribed")

		got := find(env.g, existing.Key())
		require.NotNil(t, got)
		assert.Equal(t, existing.Version, got.Version, "global's MeshTimeout untouched")
		assert.Nil(t, find(env.g, resource.Key{Type: "MeshTimeout", Mesh: "default", Name: "planted"}))
		assert.Nil(t, find(env.g, resource.Key{Type: "MeshTimeout", Mesh: "default", Zone: zone, Name: "planted"}))
		env.assertHonestZoneSyncs(t)
	})

	t.Run("response for a type global never asked for", func(t *testing.T) {
		const zone = "zone-bogus"
		s := rawSession(t, dialGlobal(t, env.g), zone, tokenFor(t, env.g, zone))
		sendResponse(t, s, kdssync.TypeURL("NoSuchType"), "1", wireResource(t, &resource.Resource{Type: "NoSuchType", Name: "x", Spec: spec(map[string]any{})}, "1"))
		nack := awaitReply(t, s, "1")
		require.NotNil(t, nack.GetErrorDetail())
		assert.Contains(t, nack.GetErrorDetail().GetMessage(), "response for type NoSuchType, which this side never subscribed to")
		sendResponse(t, s, "type.googleapis.com/envoy.config.cluster.v3.Cluster", "2")
		nack = awaitReply(t, s, "2")
		require.NotNil(t, nack.GetErrorDetail())
		assert.Contains(t, nack.GetErrorDetail().GetMessage(), "does not start with")
		assert.Empty(t, list(env.g, "NoSuchType"))
		// The session is still up and usable: a valid response is ACKed.
		sendResponse(t, s, dpURL, "3", wireResource(t, dataplane("ok", "10.0.2.1"), "1"))
		assert.Nil(t, awaitReply(t, s, "3").GetErrorDetail())
		assert.Len(t, zoneResources(t, env.g, "Dataplane", zone), 1)
		env.assertHonestZoneSyncs(t)
	})

	t.Run("malformed envelopes", func(t *testing.T) {
		const zone = "zone-garbage"
		s := rawSession(t, dialGlobal(t, env.g), zone, tokenFor(t, env.g, zone))
		good := wireResource(t, dataplane("fine", "10.0.3.1"), "1")
		garbage := &discovery.Resource{Name: "default/junk", Version: "1",
			Resource: &anypb.Any{TypeUrl: "type.googleapis.com/kds.v1.Resource", Value: []byte{0xff, 0xff, 0xff, 0xff, 0x0f, 0x01}}}
		sendResponse(t, s, dpURL, "1", good, garbage)
		nack := awaitReply(t, s, "1")
		require.NotNil(t, nack.GetErrorDetail())
		assert.Contains(t, nack.GetErrorDetail().GetMessage(), "malformed envelope")

		wrongAny := &discovery.Resource{Name: "default/other", Version: "1",
			Resource: &anypb.Any{TypeUrl: "type.googleapis.com/google.protobuf.Empty"}}
		sendResponse(t, s, dpURL, "2", wrongAny)
		nack = awaitReply(t, s, "2")
		require.NotNil(t, nack.GetErrorDetail())
		assert.Contains(t, nack.GetErrorDetail().GetMessage(), "payload type")

		mismatch := wireResource(t, dataplane("a", "10.0.3.2"), "1")
		mismatch.Name = "default/b"
		sendResponse(t, s, dpURL, "3", mismatch)
		nack = awaitReply(t, s, "3")
		require.NotNil(t, nack.GetErrorDetail())
		assert.Contains(t, nack.GetErrorDetail().GetMessage(), "wire name")

		invalidSpec := dataplane("bad", "10.0.3.3")
		invalidSpec.Spec = []byte(`{"networking": {"address": 7}}`)
		sendResponse(t, s, dpURL, "4", wireResource(t, invalidSpec, "1"))
		nack = awaitReply(t, s, "4")
		require.NotNil(t, nack.GetErrorDetail())
		assert.Contains(t, nack.GetErrorDetail().GetMessage(), "spec.networking")

		eventually(t, func() bool { return zoneType(env.g, zone, "Dataplane").ResponsesNACKed == 4 }, "every NACK in global's insights")
		got := zoneResources(t, env.g, "Dataplane", zone)
		require.Len(t, got, 1, "a refused resource holds back only itself: the valid part of a NACKed response is written")
		assert.Equal(t, "fine", got[0].Name)
		st := zoneType(env.g, zone, "Dataplane")
		assert.Equal(t, 4, st.RejectedCount, "junk, other, b and bad are listed as refused")
		env.assertHonestZoneSyncs(t)
	})

	t.Run("inconsistent responses are NACKed, not fatal", func(t *testing.T) {
		const zone = "zone-dup"
		s := rawSession(t, dialGlobal(t, env.g), zone, tokenFor(t, env.g, zone))
		dp := wireResource(t, dataplane("twice", "10.0.7.1"), "1")
		cases := []struct {
			name string
			resp *discovery.DeltaDiscoveryResponse
			want string
		}{
			{"same resource twice", &discovery.DeltaDiscoveryResponse{Resources: []*discovery.Resource{dp, dp}}, "appears more than once in the response"},
			{"put and removed at once", &discovery.DeltaDiscoveryResponse{Resources: []*discovery.Resource{dp}, RemovedResources: []string{"default/twice"}}, "appears more than once in the response"},
			{"removed twice", &discovery.DeltaDiscoveryResponse{RemovedResources: []string{"default/gone", "default/gone"}}, "appears more than once in the response"},
			{"empty removed name", &discovery.DeltaDiscoveryResponse{RemovedResources: []string{"default/"}}, "removed resource has an empty name"},
			{"NUL in removed name", &discovery.DeltaDiscoveryResponse{RemovedResources: []string{"default/a\x00b"}}, "NUL"},
			{"no version", &discovery.DeltaDiscoveryResponse{Resources: []*discovery.Resource{wireResource(t, dataplane("unversioned", "10.0.7.2"), "")}}, "version: is empty"},
		}
		for i, c := range cases {
			nonce := fmt.Sprint(i + 1)
			c.resp.TypeUrl, c.resp.Nonce = dpURL, nonce
			require.NoError(t, s.Send(&kdsv1.Message{Kind: &kdsv1.Message_Response{Response: c.resp}}), c.name)
			nack := awaitReply(t, s, nonce)
			require.NotNil(t, nack.GetErrorDetail(), c.name)
			assert.Contains(t, nack.GetErrorDetail().GetMessage(), c.want, c.name)
		}
		assert.Empty(t, zoneResources(t, env.g, "Dataplane", zone), "nothing written")
		c, _ := env.g.e.Insights().Get(zone)
		assert.True(t, c.Online, "the session survives: %s", c.LastError)
		assert.Equal(t, uint64(1), c.Sessions)
		env.assertHonestZoneSyncs(t)
	})

	t.Run("message with no kind", func(t *testing.T) {
		const zone = "zone-empty"
		s := rawSession(t, dialGlobal(t, env.g), zone, tokenFor(t, env.g, zone))
		require.NoError(t, s.Send(&kdsv1.Message{}))
		st := recvUntilErr(t, s)
		assert.Equal(t, codes.Aborted, st.Code(), st.Message())
		assert.Contains(t, st.Message(), "message with unknown kind")
		eventually(t, func() bool { c, _ := env.g.e.Insights().Get(zone); return !c.Online }, "session ended on global")
		c, _ := env.g.e.Insights().Get(zone)
		assert.Contains(t, c.LastError, "message with unknown kind")
		env.assertHonestZoneSyncs(t)
	})

	t.Run("request flood", func(t *testing.T) {
		const zone = "zone-flood"
		// A fixed window: the attacker does not read, so global's answers
		// pile up in its send buffer.
		conn := dialGlobal(t, env.g, tlsCreds(t), grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
		s := rawSession(t, conn, zone, tokenFor(t, env.g, zone))
		req := &kdsv1.Message{Kind: &kdsv1.Message_Request{Request: &discovery.DeltaDiscoveryRequest{
			TypeUrl: kdssync.TypeURL("Flood"), ResourceNamesSubscribe: []string{"*"},
		}}}
		sent := 0
		for ; sent < 100000; sent++ {
			if err := s.Send(req); err != nil {
				break // global ended the session
			}
		}
		st := recvUntilErr(t, s)
		assert.Equal(t, codes.ResourceExhausted, st.Code(), st.Message())
		assert.True(t, strings.Contains(st.Message(), "send buffer full") || strings.Contains(st.Message(), "inbound queue full"),
			"the overflow error: %s", st.Message())
		assert.Contains(t, st.Message(), "headroom = ")
		eventually(t, func() bool { c, _ := env.g.e.Insights().Get(zone); return !c.Online }, "session ended on global")
		c, _ := env.g.e.Insights().Get(zone)
		assert.Contains(t, c.LastError, "full")
		t.Logf("flood: %d requests sent before global ended the session: %s", sent, st.Message())
		env.assertHonestZoneSyncs(t)
	})

	t.Run("oversized message", func(t *testing.T) {
		const zone = "zone-huge"
		s := rawSession(t, dialGlobal(t, env.g), zone, tokenFor(t, env.g, zone))
		big := dataplane("huge", "10.0.4.1")
		big.Labels = map[string]string{"pad": strings.Repeat("x", hostileMaxMsg+1024)}
		sendResponse(t, s, dpURL, "1", wireResource(t, big, "1"))
		st := recvUntilErr(t, s)
		assert.Equal(t, codes.ResourceExhausted, st.Code(), st.Message())
		assert.Contains(t, st.Message(), "received message larger than max")
		assert.Contains(t, st.Message(), fmt.Sprintf("vs. %d)", hostileMaxMsg))
		eventually(t, func() bool { c, _ := env.g.e.Insights().Get(zone); return !c.Online }, "session ended on global")
		c, _ := env.g.e.Insights().Get(zone)
		assert.Contains(t, c.LastError, "larger than max")
		assert.Empty(t, zoneResources(t, env.g, "Dataplane", zone))
		env.assertHonestZoneSyncs(t)
	})

	t.Run("resources beyond the per-type limit", func(t *testing.T) {
		const zone = "zone-greedy"
		s := rawSession(t, dialGlobal(t, env.g), zone, tokenFor(t, env.g, zone))
		var rs []*discovery.Resource
		for i := range hostileLimit {
			rs = append(rs, wireResource(t, dataplane(fmt.Sprintf("dp-%d", i), fmt.Sprintf("10.0.5.%d", i)), "1"))
		}
		sendResponse(t, s, dpURL, "1", rs...)
		assert.Nil(t, awaitReply(t, s, "1").GetErrorDetail(), "up to the limit is fine")
		require.Len(t, zoneResources(t, env.g, "Dataplane", zone), hostileLimit)

		sendResponse(t, s, dpURL, "2", wireResource(t, dataplane("one-too-many", "10.0.5.99"), "1"))
		nack := awaitReply(t, s, "2")
		require.NotNil(t, nack.GetErrorDetail())
		want := fmt.Sprintf("resource limit exceeded: Dataplane would hold more than %d resources", hostileLimit)
		assert.Contains(t, nack.GetErrorDetail().GetMessage(), want)
		eventually(t, func() bool { return zoneType(env.g, zone, "Dataplane").ResponsesNACKed == 1 }, "NACK in global's insights")
		assert.Contains(t, zoneType(env.g, zone, "Dataplane").LastNACKError, want)
		assert.Len(t, zoneResources(t, env.g, "Dataplane", zone), hostileLimit, "nothing beyond the limit written")

		// Replacing one (remove + add in one response) stays within it.
		require.NoError(t, s.Send(&kdsv1.Message{Kind: &kdsv1.Message_Response{Response: &discovery.DeltaDiscoveryResponse{
			TypeUrl: dpURL, Nonce: "3", RemovedResources: []string{"default/dp-0"},
			Resources: []*discovery.Resource{wireResource(t, dataplane("dp-new", "10.0.5.50"), "1")},
		}}}))
		assert.Nil(t, awaitReply(t, s, "3").GetErrorDetail())
		assert.Len(t, zoneResources(t, env.g, "Dataplane", zone), hostileLimit)
		env.assertHonestZoneSyncs(t)
	})
}

func TestHostileClientWithoutCertificateUnderMTLS(t *testing.T) {
	pki, err := tlsutil.GeneratePKI(t.TempDir(), []string{"localhost"}, []string{honestZone})
	require.NoError(t, err)
	env := startHostileEnvMTLS(t, pki.CAFile, pki.Clients[honestZone].CertFile, pki.Clients[honestZone].KeyFile)

	// Trusts global's CA and has a valid token, but no client certificate:
	// the TLS handshake fails, so no RPC runs. (How the failure surfaces on
	// the client — an alert, a reset, a broken pipe — depends on timing.)
	conn := dialGlobal(t, env.g)
	ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(),
		"kds-zone", "zone-nocert", "authorization", "Bearer "+tokenFor(t, env.g, "zone-nocert")), 30*time.Second)
	defer cancel()
	s, err := kdsv1.NewKDSClient(conn).Session(ctx)
	if err == nil {
		_, err = s.Recv()
	}
	require.Error(t, err)
	assert.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
	_, known := env.g.e.Insights().Get("zone-nocert")
	assert.False(t, known)
	env.assertHonestZoneSyncs(t)
}

// Under mTLS, a zone's certificate names its zone (URI SAN
// kds-zone://NAME): zone-thief's certificate with a valid token of another
// zone opens no session; with its own token it does.
func TestHostileZoneCertificateForAnotherZone(t *testing.T) {
	pki, err := tlsutil.GeneratePKI(t.TempDir(), []string{"localhost"}, []string{honestZone, "zone-thief"})
	require.NoError(t, err)
	env := startHostileEnvMTLS(t, pki.CAFile, pki.Clients[honestZone].CertFile, pki.Clients[honestZone].KeyFile)

	thief := pki.Clients["zone-thief"]
	tc, err := tlsutil.ClientConfig(caFile, thief.CertFile, thief.KeyFile, "localhost", hclog.NewNullLogger()) // global's certificate is the test CA's
	require.NoError(t, err)
	creds := grpc.WithTransportCredentials(credentials.NewTLS(tc))

	before := refusedFor(t, env.g, "certificate_mismatch")
	st := recvUntilErr(t, rawSession(t, dialGlobal(t, env.g, creds), "zone-victim", tokenFor(t, env.g, "zone-victim")))
	requireGenericRefusal(t, st)
	assert.Equal(t, before+1, refusedFor(t, env.g, "certificate_mismatch"))
	_, known := env.g.e.Insights().Get("zone-victim")
	assert.False(t, known, "no session for the zone the token names")

	s := rawSession(t, dialGlobal(t, env.g, creds), "zone-thief", tokenFor(t, env.g, "zone-thief"))
	md, err := s.Header()
	require.NoError(t, err)
	assert.NotEmpty(t, md, "its own zone: accepted")
	env.assertHonestZoneSyncs(t)
}

// startHostileEnvMTLS is startHostileEnv with mTLS: global requires client
// certificates from clientCA; the honest zone presents cert and key.
func startHostileEnvMTLS(t *testing.T, clientCA, cert, key string) *hostileEnv {
	t.Helper()
	g := startNode(t, Config{Role: RoleGlobal, PluginsDir: builtinDir, ClientCAFile: clientCA})
	honest := startNode(t, zoneConfig(t, honestZone, g, Config{PluginsDir: builtinDir, CertFile: cert, KeyFile: key}))
	create(t, g, &resource.Resource{Type: "Mesh", Name: "default", Spec: spec(map[string]any{})})
	create(t, honest, dataplane("honest-dp", "10.0.0.1"))
	eventually(t, func() bool { return find(g, honestDPKey()) != nil }, "honest dataplane reaches global")
	return &hostileEnv{g: g, honest: honest}
}

func TestAdminAPIRefusesNonLoopbackWithoutTLSAndToken(t *testing.T) {
	e, err := New(Config{Role: RoleGlobal, PluginsDir: builtinDir, DataDir: t.TempDir(),
		APIAddress: "0.0.0.0:0", KDSAddress: "127.0.0.1:0", TLSCertFile: certFile, TLSKeyFile: keyFile}, hclog.NewNullLogger())
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err = e.Run(ctx)
	require.ErrorIs(t, err, httpauth.ErrInsecureBind)
	assert.Contains(t, err.Error(), "0.0.0.0:0 is not a loopback address")
	assert.Contains(t, err.Error(), "missing TLS (set --api-tls-cert-file and --api-tls-key-file) and a token (set --api-token-file)")
	select {
	case <-e.Started():
		t.Fatal("the engine must not start")
	default:
	}
}

func TestAdminAPIWriteWithoutTokenIsRefused(t *testing.T) {
	tokFile := filepath.Join(t.TempDir(), "api.token")
	const apiToken = "0123456789abcdef0123456789abcdef"
	require.NoError(t, os.WriteFile(tokFile, []byte(apiToken+"\n"), 0o600))
	g := startNode(t, Config{Role: RoleGlobal, PluginsDir: builtinDir, APITokenFile: tokFile})
	create(t, g, &resource.Resource{Type: "Mesh", Name: "default", Spec: spec(map[string]any{})})

	put := func(name, auth string) (int, string) {
		body := fmt.Sprintf(`{"spec": %s}`, meshTimeout(name, "5s").Spec)
		req, err := http.NewRequest(http.MethodPut,
			"http://"+g.e.APIAddr().String()+"/api/v1/resources/MeshTimeout/"+name+"?mesh=default", bytes.NewReader([]byte(body)))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/json")
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, auth := range []string{"", "Bearer wrong-token-wrong-token", "Basic " + apiToken, apiToken} {
		code, body := put("sneaky", auth)
		assert.Equal(t, http.StatusUnauthorized, code, "Authorization %q", auth)
		assert.Contains(t, body, `"code":"unauthenticated"`)
	}
	assert.Empty(t, list(g, "MeshTimeout"), "nothing written")

	code, body := put("allowed", "Bearer "+apiToken)
	assert.Equal(t, http.StatusCreated, code, body)
	assert.Len(t, list(g, "MeshTimeout"), 1, "the token is what gates the write")
}

// failingListStore is a store whose reads fail: the sync client cannot read
// the versions it holds.
type failingListStore struct{ store.Store }

func (failingListStore) List(context.Context, store.Filter) ([]*resource.Resource, error) {
	return nil, errors.New("disk on fire")
}

func (failingListStore) Versions(context.Context, store.Filter) ([]store.KeyVersion, error) {
	return nil, errors.New("disk on fire")
}

type noTypes struct{}

func (noTypes) Type(string) (resource.TypeDescriptor, bool) { return resource.TypeDescriptor{}, false }

// idleStream is a mux.Stream on which nothing arrives until the session
// aborts it.
type idleStream struct {
	ctx  context.Context
	done chan struct{}
}

func (s *idleStream) Send(*kdsv1.Message) error     { return nil }
func (s *idleStream) Context() context.Context      { return s.ctx }
func (s *idleStream) Recv() (*kdsv1.Message, error) { <-s.done; return nil, io.EOF }

// A sync failure (the store, or a plugin that is down) must end the session
// so that the zone reconnects and resumes, rather than leave it open with
// nothing flowing.
func TestSyncFailureEndsTheSession(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg)
	require.NoError(t, err)
	mem := memory.New()
	defer mem.Close()
	e := &Engine{
		cfg:      Config{Role: RoleGlobal},
		log:      hclog.NewNullLogger(),
		ins:      insights.NewRegistry(),
		metrics:  m,
		store:    guard.New(failingListStore{mem}, guard.Global, noTypes{}),
		server:   kdssync.NewServer(kdssync.NewIndex(nil)),
		received: []string{"Dataplane"},
	}
	st := &idleStream{ctx: context.Background(), done: make(chan struct{})}
	sess := mux.NewSession(st, 1, mux.WithAbort(func() { close(st.done) }))
	runDone := make(chan error, 1)
	go func() { runDone <- sess.Run(context.Background()) }()

	syncDone := make(chan error, 1)
	go func() { syncDone <- e.runSync(sess.Context(), "zone-1", "zone-1", sess, e.validator, nil, nil) }()
	select {
	case err := <-syncDone:
		require.Error(t, err)
		assert.Contains(t, err.Error(), "disk on fire")
	case <-time.After(30 * time.Second):
		sess.Close(errors.New("test gave up"))
		<-syncDone
		t.Fatal("the sync did not return after its client failed: the session hangs")
	}
	select {
	case err := <-runDone:
		assert.Contains(t, err.Error(), "disk on fire", "the session ends with the sync's error")
	case <-time.After(30 * time.Second):
		sess.Close(errors.New("test gave up"))
		<-runDone
		t.Fatal("the session did not end")
	}
}
