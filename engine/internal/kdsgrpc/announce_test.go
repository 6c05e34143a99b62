package kdsgrpc

import (
	"context"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/kds-engine/kds-engine/engine/internal/mux"
	kdsv1 "github.com/kds-engine/kds-engine/proto/kds/v1"
)

// runDialer runs d until the test ends.
func runDialer(t *testing.T, d *Dialer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
}

// Each side announces its type count and max message size; each sizes the
// session from both: queues from the peer's count for the stream it
// serves, sends at most the smaller size.
func TestFaultAnnouncementSizesBothSides(t *testing.T) {
	for _, tc := range []struct {
		name                 string
		globalMax, zoneMax   int
		globalTypes, zoneTyp int
	}{
		{"global larger", 8 << 20, 4 << 20, 200, 3},
		{"zone larger", 4 << 20, 8 << 20, 3, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			globalParams := make(chan mux.Params, 1)
			g := NewGlobal(tc.globalTypes, func(ctx context.Context, _ string, s *mux.Session) error {
				globalParams <- s.Params()
				<-ctx.Done()
				return nil
			}, WithConfig(Config{MaxMessageSize: tc.globalMax}))
			addr := serve(t, g, Config{MaxMessageSize: tc.globalMax})
			zoneParams := make(chan mux.Params, 1)
			runDialer(t, NewDialer([]string{addr}, "zone-1", tc.zoneTyp, func(ctx context.Context, s *mux.Session) error {
				zoneParams <- s.Params()
				<-ctx.Done()
				return nil
			}, insecureDial(), WithConfig(Config{MaxMessageSize: tc.zoneMax})))

			agreed := min(tc.globalMax, tc.zoneMax)
			gp, zp := <-globalParams, <-zoneParams
			for _, c := range []struct {
				side                string
				p                   mux.Params
				own, peer           int
				ownTypes, peerTypes int
			}{
				{"global", gp, tc.globalMax, tc.zoneMax, tc.globalTypes, tc.zoneTyp},
				{"zone", zp, tc.zoneMax, tc.globalMax, tc.zoneTyp, tc.globalTypes},
			} {
				assert.True(t, c.p.PeerAnnounced, c.side)
				assert.Equal(t, c.ownTypes, c.p.Types, c.side)
				assert.Equal(t, c.peerTypes, c.p.PeerTypes, c.side)
				assert.Equal(t, c.own, c.p.LocalMaxMessageSize, c.side)
				assert.Equal(t, c.peer, c.p.PeerMaxMessageSize, c.side)
				assert.Equal(t, agreed, c.p.MaxMessageSize, c.side)
				assert.Equal(t, c.peerTypes*c.p.Window+c.p.Headroom, c.p.ServerCapacity, "%s: the served stream is sized from the peer's types", c.side)
			}
			// One logical stream, the same figure on both ends.
			assert.Equal(t, gp.ServerCapacity, zp.ClientCapacity)
			assert.Equal(t, gp.ClientCapacity, zp.ServerCapacity)
		})
	}
}

// Announced figures out of range are refused by global with
// InvalidArgument naming the header and the value; a zone that announces
// nothing (an older build) is taken to be like global.
func TestFaultGlobalRefusesInvalidAnnouncement(t *testing.T) {
	var handled atomic.Int32
	params := make(chan mux.Params, 1)
	g := NewGlobal(5, func(ctx context.Context, _ string, s *mux.Session) error {
		handled.Add(1)
		params <- s.Params()
		<-ctx.Done()
		return nil
	})
	addr := serve(t, g, Config{})
	for _, tc := range []struct{ key, value string }{
		{MaxMessageSizeMetadataKey, "0"},
		{MaxMessageSizeMetadataKey, "-1"},
		{MaxMessageSizeMetadataKey, "abc"},
		{MaxMessageSizeMetadataKey, strconv.Itoa(64<<20 + 1)},
		{MaxMessageSizeMetadataKey, "+5"},
		{MaxMessageSizeMetadataKey, strconv.Itoa(64<<10 - 1)},
		{TypesMetadataKey, "-1"},
		{TypesMetadataKey, "abc"},
		{TypesMetadataKey, "100001"},
		{TypesMetadataKey, "99999999999999999999999"},
	} {
		ctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(context.Background(), tc.key, tc.value))
		s := rawStream(t, ctx, addr, "zone-1")
		_, err := s.Recv()
		cancel()
		require.Error(t, err)
		assert.Equal(t, codes.InvalidArgument, status.Code(err), "%s=%s: %v", tc.key, tc.value, err)
		msg := status.Convert(err).Message()
		assert.Contains(t, msg, tc.key+" ")
		assert.Contains(t, msg, tc.value[:min(len(tc.value), 20)])
	}
	// Twice is refused too: which one would count?
	ctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(context.Background(), TypesMetadataKey, "3", TypesMetadataKey, "4"))
	_, err := rawStream(t, ctx, addr, "zone-1").Recv()
	cancel()
	assert.Equal(t, codes.InvalidArgument, status.Code(err))
	assert.Contains(t, status.Convert(err).Message(), "kds-types was sent 2 times")
	assert.Zero(t, handled.Load(), "no refused session reached the handler")

	// Nothing announced: accepted, sized as if the zone were like global.
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	s := rawStream(t, ctx, addr, "zone-1")
	md, err := s.Header()
	require.NoError(t, err)
	assert.Equal(t, []string{"5"}, md.Get(TypesMetadataKey), "global announces its figures in its session header")
	assert.Equal(t, []string{strconv.Itoa(mux.DefaultMaxMessageSize)}, md.Get(MaxMessageSizeMetadataKey))
	select {
	case p := <-params:
		assert.False(t, p.PeerAnnounced)
		assert.Equal(t, 5, p.PeerTypes)
		assert.Equal(t, mux.DefaultMaxMessageSize, p.MaxMessageSize)
	case <-time.After(20 * time.Second):
		t.Fatal("the session of a zone that announced nothing did not start")
	}
}

// headerGlobal answers every session with a fixed header and then holds the
// stream open until the zone ends it.
type headerGlobal struct {
	kdsv1.UnimplementedKDSServer
	header   metadata.MD
	sessions atomic.Int32
}

func (h *headerGlobal) Session(stream kdsv1.KDS_SessionServer) error {
	h.sessions.Add(1)
	if err := stream.SendHeader(h.header); err != nil {
		return err
	}
	for {
		if _, err := stream.Recv(); err != nil {
			return nil
		}
	}
}

// A zone refuses a global that announces figures out of range: the attempt
// fails with an error naming the header and the value, reported to the
// refused hook and in the Dialer's state, and no session starts. A global
// that announces nothing is taken to be like the zone.
func TestFaultZoneRefusesInvalidAnnouncement(t *testing.T) {
	for _, tc := range []struct{ key, value string }{
		{MaxMessageSizeMetadataKey, "0"},
		{MaxMessageSizeMetadataKey, "-1"},
		{MaxMessageSizeMetadataKey, "abc"},
		{MaxMessageSizeMetadataKey, strconv.Itoa(64<<20 + 1)},
		{TypesMetadataKey, "100001"},
	} {
		t.Run(tc.key+"="+tc.value, func(t *testing.T) {
			peer := &headerGlobal{header: metadata.Pairs(tc.key, tc.value)}
			addr := serve(t, peer, Config{})
			var started atomic.Int32
			refusals := make(chan error, 100)
			d := NewDialer([]string{addr}, "zone-1", 3, func(ctx context.Context, _ *mux.Session) error {
				started.Add(1)
				<-ctx.Done()
				return nil
			}, insecureDial(),
				WithBackoff(Backoff{Base: 5 * time.Millisecond, Cap: 10 * time.Millisecond}),
				WithRefusedHook(func(err error) {
					select {
					case refusals <- err:
					default:
					}
				}))
			runDialer(t, d)
			var err error
			select {
			case err = <-refusals:
			case <-time.After(20 * time.Second):
				t.Fatal("no refusal reported")
			}
			require.ErrorIs(t, err, ErrInvalidAnnouncement)
			assert.Contains(t, err.Error(), "global's session header")
			assert.Contains(t, err.Error(), tc.key+" "+tc.value)
			st := d.State()
			require.Error(t, st.LastError)
			assert.Contains(t, st.LastError.Error(), tc.key+" "+tc.value)
			assert.Zero(t, started.Load())
			assert.Zero(t, st.Sessions)
		})
	}

	t.Run("nothing announced", func(t *testing.T) {
		peer := &headerGlobal{header: metadata.Pairs("x-other", "1")}
		addr := serve(t, peer, Config{})
		params := make(chan mux.Params, 1)
		runDialer(t, NewDialer([]string{addr}, "zone-1", 3, func(ctx context.Context, s *mux.Session) error {
			params <- s.Params()
			<-ctx.Done()
			return nil
		}, insecureDial()))
		select {
		case p := <-params:
			assert.False(t, p.PeerAnnounced)
			assert.Equal(t, 3, p.PeerTypes)
		case <-time.After(20 * time.Second):
			t.Fatal("no session with a global that announced nothing")
		}
	})
}

// The zone announces its figures in the request metadata of its stream.
func TestZoneAnnouncesInRequestMetadata(t *testing.T) {
	got := make(chan metadata.MD, 1)
	coalesce := make(chan bool, 2)
	parts := make(chan bool, 2)
	g := NewGlobal(1, func(ctx context.Context, _ string, s *mux.Session) error {
		md, _ := metadata.FromIncomingContext(s.Context())
		got <- md
		coalesce <- s.Params().Coalesce
		parts <- PeerAcceptsResumeParts(ctx)
		<-ctx.Done()
		return nil
	})
	addr := serve(t, g, Config{})
	runDialer(t, NewDialer([]string{addr}, "zone-1", 7, func(ctx context.Context, s *mux.Session) error {
		coalesce <- s.Params().Coalesce
		parts <- PeerAcceptsResumeParts(ctx)
		<-ctx.Done()
		return nil
	}, insecureDial(), WithConfig(Config{MaxMessageSize: 1 << 20})))
	select {
	case md := <-got:
		assert.Equal(t, []string{"7"}, md.Get(TypesMetadataKey))
		assert.Equal(t, []string{strconv.Itoa(1 << 20)}, md.Get(MaxMessageSizeMetadataKey))
		assert.Equal(t, []string{"1"}, md.Get(CoalesceMetadataKey))
		assert.Equal(t, []string{"1"}, md.Get(ResumePartsMetadataKey))
		assert.True(t, <-coalesce, "both sides announced batches: both send them")
		assert.True(t, <-coalesce)
		assert.True(t, <-parts, "both sides announced resume parts: both handlers learn it")
		assert.True(t, <-parts)
	case <-time.After(20 * time.Second):
		t.Fatal("no session")
	}
}

// kds-coalesce: absent or 0 is off, 1 is on, anything else (or twice)
// refuses the session like any invalid figure.
func TestParseCoalesce(t *testing.T) {
	for _, c := range []struct {
		vals []string
		on   bool
		bad  bool
	}{{nil, false, false}, {[]string{"0"}, false, false}, {[]string{"1"}, true, false},
		{[]string{"2"}, false, true}, {[]string{"yes"}, false, true}, {[]string{"1", "1"}, false, true}} {
		md := metadata.MD{}
		for _, v := range c.vals {
			md.Append(CoalesceMetadataKey, v)
		}
		p, err := parseAnnouncement(md)
		if c.bad {
			assert.ErrorIs(t, err, ErrInvalidAnnouncement, "%v", c.vals)
			continue
		}
		require.NoError(t, err, "%v", c.vals)
		assert.Equal(t, c.on, p.coalesce, "%v", c.vals)
		hasOpt := len(p.muxOptions()) > 0
		assert.Equal(t, c.on, hasOpt, "%v: only a peer that accepts batches gets them", c.vals)
	}
}

// kds-resume-parts: absent or 0 is off, 1 is on, anything else (or twice)
// refuses the session like any invalid figure.
func TestParseResumeParts(t *testing.T) {
	for _, c := range []struct {
		vals []string
		on   bool
		bad  bool
	}{{nil, false, false}, {[]string{"0"}, false, false}, {[]string{"1"}, true, false},
		{[]string{"2"}, false, true}, {[]string{"on"}, false, true}, {[]string{"1", "1"}, false, true}} {
		md := metadata.MD{}
		for _, v := range c.vals {
			md.Append(ResumePartsMetadataKey, v)
		}
		p, err := parseAnnouncement(md)
		if c.bad {
			assert.ErrorIs(t, err, ErrInvalidAnnouncement, "%v", c.vals)
			continue
		}
		require.NoError(t, err, "%v", c.vals)
		assert.Equal(t, c.on, PeerAcceptsResumeParts(withPeerFigures(context.Background(), p)), "%v", c.vals)
	}
	assert.False(t, PeerAcceptsResumeParts(context.Background()), "no announcement in the context")
}

// A zone announces the types it receives (WithReceives); global's handler
// gets those it serves that the zone does not list, and nothing for a zone
// that does not send kds-receives. A kds-receives that is not one list of
// distinct type names is refused with InvalidArgument naming the key.
func TestGlobalReadsZoneReceives(t *testing.T) {
	type got struct {
		types     []string
		announced bool
	}
	sessions := make(chan got, 4)
	g := NewGlobal(3, func(ctx context.Context, _ string, _ *mux.Session) error {
		types, announced := PeerDoesNotReceive(ctx)
		sessions <- got{types, announced}
		<-ctx.Done()
		return nil
	}, WithServedTypes([]string{"Mesh", "MeshTimeout", "MeshRetry"}))
	addr := serve(t, g, Config{})

	runDialer(t, NewDialer([]string{addr}, "zone-1", 3, func(ctx context.Context, _ *mux.Session) error {
		<-ctx.Done()
		return nil
	}, insecureDial(), WithReceives([]string{"Mesh", "MeshRetry", "Other"})))
	select {
	case s := <-sessions:
		assert.True(t, s.announced)
		assert.Equal(t, []string{"MeshTimeout"}, s.types, "only the served types the zone does not list")
	case <-time.After(20 * time.Second):
		t.Fatal("no session")
	}

	for _, tc := range []struct {
		md   metadata.MD
		want got
	}{
		{nil, got{nil, false}},
		{metadata.Pairs(ReceivesMetadataKey, ""), got{[]string{"Mesh", "MeshTimeout", "MeshRetry"}, true}},
	} {
		ctx, cancel := context.WithCancel(metadata.NewOutgoingContext(context.Background(), tc.md))
		s := rawStream(t, ctx, addr, "zone-2")
		_, err := s.Header()
		require.NoError(t, err)
		select {
		case s := <-sessions:
			assert.Equal(t, tc.want, s, "%v", tc.md)
		case <-time.After(20 * time.Second):
			t.Fatal("no session")
		}
		cancel()
	}

	for _, tc := range []struct{ value, want string }{
		{"Mesh,Mesh", "kds-receives: Mesh is listed twice"},
		{"Mesh,mesh-timeout", "kds-receives: mesh-timeout is not a type name"},
		{"Mesh,,MeshRetry", `kds-receives: "" is not a type name`},
		{",", `kds-receives: "" is not a type name`},
		{"M" + strings.Repeat("x", 63), "is not a type name"},
	} {
		ctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(context.Background(), ReceivesMetadataKey, tc.value))
		_, err := rawStream(t, ctx, addr, "zone-3").Recv()
		cancel()
		assert.Equal(t, codes.InvalidArgument, status.Code(err), "%q: %v", tc.value, err)
		assert.Contains(t, status.Convert(err).Message(), tc.want)
	}
	ctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(context.Background(),
		ReceivesMetadataKey, "Mesh", ReceivesMetadataKey, "MeshRetry"))
	_, err := rawStream(t, ctx, addr, "zone-3").Recv()
	cancel()
	assert.Equal(t, codes.InvalidArgument, status.Code(err))
	assert.Contains(t, status.Convert(err).Message(), "kds-receives was sent 2 times")
	assert.Empty(t, sessions, "no refused session reached the handler")
}
