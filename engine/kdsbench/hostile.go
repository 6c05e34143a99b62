package kdsbench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/kds-engine/kds-engine/engine"
	"github.com/kds-engine/kds-engine/engine/internal/kdsgrpc"
	"github.com/kds-engine/kds-engine/engine/internal/kdssync"
	"github.com/kds-engine/kds-engine/engine/internal/mux"
	"github.com/kds-engine/kds-engine/engine/internal/resource"
	"github.com/kds-engine/kds-engine/engine/internal/store"
	"github.com/kds-engine/kds-engine/engine/internal/tlsutil"
	kdsv1 "github.com/kds-engine/kds-engine/proto/kds/v1"
)

// HostileConfig sizes the hostile mode. Zero fields take their defaults.
type HostileConfig struct {
	// Duration is the length of each phase: the baseline (honest zone
	// only) and the attack (honest zone and hostile zone). Default 25s.
	Duration time.Duration `json:"duration"`
	// Policies global holds and sends every zone, of PolicySize bytes.
	// Default 200 of 1 KiB.
	Policies   int `json:"policies"`
	PolicySize int `json:"policySize"`
	// Sessions is how many sessions the hostile zone keeps opening at once
	// (more than one: each new one replaces the older on global). Default 1.
	Sessions int `json:"sessions"`
	// Hold is how long each hostile session lives, never reading what
	// global sends, before it sends an oversized message. Default 3s.
	Hold time.Duration `json:"hold"`
	// BigSubscriptions per session, each claiming HeldNames held names
	// (60 encoded bytes each). Default 40, each with as many names as fit
	// in one message of MaxMessageSize (about 69900 at 4 MiB; global's
	// limit of 200000 names per request needs more than 12 MB).
	BigSubscriptions int `json:"bigSubscriptions"`
	HeldNames        int `json:"heldNames"`
	// MaxMessageSize is global's and the honest zone's --max-message-size
	// (default the engine's, 4 MiB).
	MaxMessageSize int `json:"maxMessageSize"`
	// UnknownTypes is how many requests for distinct unknown type names
	// each session sends. Default 3000.
	UnknownTypes int `json:"unknownTypes"`
	// Resubscriptions per session (requests without a nonce for a type
	// global serves). Default 20.
	Resubscriptions int `json:"resubscriptions"`
	// Pushed resources of PushSize bytes the hostile zone sends global in
	// every session. Default 100 of 256 KiB.
	Pushed   int `json:"pushed"`
	PushSize int `json:"pushSize"`
	// AttackCommand, if set, runs the hostile zone in a child process: it is
	// called with the attack as JSON and returns the command to start (see
	// HostileZoneProcess). Nil runs it in this process, where what it
	// allocates counts against global's RSS.
	AttackCommand func(attackJSON string) *exec.Cmd `json:"-"`
}

func (c HostileConfig) withDefaults() HostileConfig {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	if c.Duration <= 0 {
		c.Duration = 25 * time.Second
	}
	if c.Hold <= 0 {
		c.Hold = 3 * time.Second
	}
	def(&c.Policies, 200)
	def(&c.PolicySize, 1024)
	def(&c.Sessions, 1)
	def(&c.BigSubscriptions, 40)
	def(&c.MaxMessageSize, mux.DefaultMaxMessageSize)
	def(&c.HeldNames, min((c.MaxMessageSize-4096)/heldNameBytes, maxNamesPerRequest))
	def(&c.UnknownTypes, 3000)
	def(&c.Resubscriptions, 20)
	def(&c.Pushed, 100)
	def(&c.PushSize, 256<<10)
	return c
}

const (
	// heldNameBytes is what one held name costs in a subscription's
	// encoded initial versions ("default/name-" and 26 digits, a 15-byte
	// version, map entry framing).
	heldNameBytes = 60
	// maxNamesPerRequest is global's limit on names in one request.
	maxNamesPerRequest = 200000
)

// hostileTarget is what the hostile zone needs to attack global; it is
// what a child process receives as JSON.
type hostileTarget struct {
	Addr   string        `json:"addr"`
	CAFile string        `json:"caFile"`
	Token  string        `json:"token"`
	Zone   string        `json:"zone"`
	Config HostileConfig `json:"config"`
}

// attackStats counts what the hostile zone did.
type attackStats struct {
	Sessions   int64 `json:"sessions"`
	Messages   int64 `json:"messages"`
	Bytes      int64 `json:"bytes"`
	SendErrors int64 `json:"sendErrors"`
	// FirstError is the first failed Send's error, for the report.
	FirstError string `json:"firstError,omitempty"`
}

// Hostile measures what one hostile zone can make global hold: global and a
// well-behaved zone run in this process; the honest zone and global write
// all the time. The baseline phase runs that alone for Duration, the attack
// phase adds a hostile zone for Duration. Global's RSS (VmRSS of this
// process, sampled every 100ms) is reported for both phases; the growth is
// the attack phase's peak minus the baseline phase's peak. The target is a
// growth of at most 256 MiB while the honest zone keeps its one session and
// keeps syncing.
func Hostile(ctx context.Context, o Options, c HostileConfig) (*Report, error) {
	o = o.withDefaults()
	c = c.withDefaults()
	r := newReport("hostile", "global's RSS grows by ≤ 256 MiB under one hostile zone's mix; the honest zone keeps its session and syncs",
		"phase", "peak RSS MiB", "end RSS MiB", "heap in use MiB", "honest writes")
	v, err := newEnv(o.PluginsDir, o.Log)
	if err != nil {
		return nil, err
	}
	defer v.close()
	g, err := v.startGlobal("global", func(cfg *engine.Config) {
		cfg.MaxMessageSize, cfg.MaxResourceSize = c.MaxMessageSize, min(1<<20, c.MaxMessageSize/2)
	})
	if err != nil {
		return nil, err
	}
	defer g.stop()
	if err := g.e.BulkLoad(ctx, makeResources(policyType, "p", c.Policies, c.PolicySize)); err != nil {
		return nil, fmt.Errorf("load global: %w", err)
	}
	const honestZone = "zone-honest"
	zc, err := v.zoneConfig(g, honestZone, localAddr(g.e.KDSAddr()), "")
	if err != nil {
		return nil, err
	}
	zc.MaxMessageSize, zc.MaxResourceSize = c.MaxMessageSize, min(1<<20, c.MaxMessageSize/2)
	z, err := v.start(zc)
	if err != nil {
		return nil, err
	}
	defer z.stop()
	if err := waitHonest(ctx, g, z, honestZone, c.Policies); err != nil {
		return nil, err
	}

	h := &honestWriter{g: g, z: z}
	base, err := h.phase(ctx, c.Duration, nil)
	if err != nil {
		return nil, err
	}
	if err := waitHonest(ctx, g, z, honestZone, c.Policies); err != nil {
		return nil, fmt.Errorf("after the baseline phase: %w", err)
	}
	r.row("baseline: honest zone only", mib(base.peak), mib(base.end), mib(base.heap), base.writes)

	const hostileZone = "zone-hostile"
	tok, err := engine.GenerateZoneToken(g.cfg.DataDir, "", "", hostileZone, time.Hour)
	if err != nil {
		return nil, err
	}
	tgt := hostileTarget{Addr: localAddr(g.e.KDSAddr()), CAFile: v.ca, Token: tok, Zone: hostileZone, Config: c}
	where := "in this process (what it allocates counts against global's RSS)"
	var stats attackStats
	// Unknown types global shows for the hostile zone, at most, while it
	// attacks (they are dropped when its session ends).
	unknown := 0
	h.onTick = func() {
		hc, _ := g.e.Insights().Get(hostileZone)
		n := 0
		for _, ts := range hc.Types {
			if ts.Unknown {
				n++
			}
		}
		unknown = max(unknown, n)
	}
	attack, err := h.phase(ctx, c.Duration, func(actx context.Context) (func() error, error) {
		if c.AttackCommand == nil {
			done := make(chan error, 1)
			go func() {
				s, err := runAttack(actx, tgt)
				stats = s
				done <- err
			}()
			return func() error { return <-done }, nil
		}
		where = "in a child process"
		b, err := json.Marshal(tgt)
		if err != nil {
			return nil, err
		}
		cmd := c.AttackCommand(string(b))
		cmd.Stderr = os.Stderr
		var out strings.Builder
		cmd.Stdout = &out
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("start hostile zone process: %w", err)
		}
		stop := context.AfterFunc(actx, func() { _ = cmd.Process.Signal(syscall.SIGTERM) })
		return func() error {
			err := cmd.Wait()
			stop()
			if jerr := json.Unmarshal([]byte(strings.TrimSpace(out.String())), &stats); jerr != nil && err == nil {
				err = fmt.Errorf("hostile zone process output %q: %w", out.String(), jerr)
			}
			return err
		}, nil
	})
	if err != nil {
		return nil, err
	}
	r.row("attack: honest + hostile zone", mib(attack.peak), mib(attack.end), mib(attack.heap), attack.writes)

	// After the attack, the honest zone still syncs both ways, in the
	// session it had from the start.
	synced := waitHonest(ctx, g, z, honestZone, c.Policies) == nil
	gc, _ := g.e.Insights().Get(honestZone)
	h.onTick = nil
	growth := int64(attack.peak) - int64(base.peak)
	r.Figures["duration_seconds"] = c.Duration.Seconds()
	r.Figures["rss_baseline_peak_bytes"] = float64(base.peak)
	r.Figures["rss_attack_peak_bytes"] = float64(attack.peak)
	r.Figures["rss_growth_bytes"] = float64(growth)
	r.Figures["rss_growth_mib"] = float64(growth) / (1 << 20)
	r.Figures["heap_baseline_bytes"] = float64(base.heap)
	r.Figures["heap_attack_bytes"] = float64(attack.heap)
	r.Figures["honest_sessions"] = float64(gc.Sessions)
	r.Figures["honest_synced_after"] = b2f(synced)
	r.Figures["honest_writes_baseline"] = float64(base.writes)
	r.Figures["honest_writes_attack"] = float64(attack.writes)
	r.Figures["hostile_sessions"] = float64(stats.Sessions)
	r.Figures["hostile_messages"] = float64(stats.Messages)
	r.Figures["hostile_bytes"] = float64(stats.Bytes)
	r.Figures["hostile_unknown_types_shown"] = float64(unknown)
	r.Pass = growth <= 256<<20 && synced && gc.Sessions == 1 && stats.Sessions > 0
	r.note("global and the honest zone run in this process (both phases); RSS is this process's VmRSS sampled every 100ms, heap is HeapInuse after a GC at the end of the phase")
	r.note("the hostile zone runs %s; it opened %d sessions (%d at once, each replacing the older), sent %d messages, %d MiB; global showed at most %d unknown types for it at once",
		where, stats.Sessions, c.Sessions, stats.Messages, stats.Bytes>>20, unknown)
	if stats.FirstError != "" {
		r.note("%d of the hostile zone's sends failed, the first with: %s", stats.SendErrors, stats.FirstError)
	}
	r.note("per session, in this order: %[3]d unknown types, %[4]d re-subscriptions, %[1]d resources of %[2]d KiB pushed, %[5]d subscriptions claiming %[6]d names each, having announced %d types and a %d MiB max message size (the largest accepted, so global's byte budgets for it are the largest), nothing read for %s, then a message over global's %d KiB limit",
		c.Pushed, c.PushSize>>10, c.UnknownTypes, c.Resubscriptions, c.BigSubscriptions, c.HeldNames,
		kdsgrpc.MaxAnnouncedTypes, kdsgrpc.MaxAnnouncedMessageSize>>20, c.Hold, c.MaxMessageSize>>10)
	return r, nil
}

// waitHonest waits until the honest zone holds every policy of global and
// global every status of the zone, at the writer's versions.
func waitHonest(ctx context.Context, g, z *node, zone string, policies int) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		ok, err := converged(ctx, g, z, zone, policies)
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("the honest zone did not converge with global within 60s")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func converged(ctx context.Context, g, z *node, zone string, policies int) (bool, error) {
	gp, err := g.e.Store().Versions(ctx, storeFilter(policyType, ""))
	if err != nil {
		return false, err
	}
	zp, err := z.e.Store().Versions(ctx, storeFilter(policyType, ""))
	if err != nil {
		return false, err
	}
	if len(gp) < policies || !sameVersions(gp, zp) {
		return false, nil
	}
	zs, err := z.e.Store().Versions(ctx, storeFilter(statusType, ""))
	if err != nil {
		return false, err
	}
	gs, err := g.e.Store().Versions(ctx, storeFilter(statusType, zone))
	if err != nil {
		return false, err
	}
	return sameVersions(zs, gs), nil
}

// honestWriter keeps global and the honest zone writing.
type honestWriter struct {
	g, z *node
	seq  int
	// onTick, if set, runs at every sample.
	onTick func()
}

type phaseResult struct {
	peak, end, heap uint64
	writes          int
}

// phase writes one policy on global and one status on the zone every
// 100ms for d, sampling RSS, with attack (if not nil) started at the
// beginning and stopped at the end.
func (h *honestWriter) phase(ctx context.Context, d time.Duration, attack func(context.Context) (func() error, error)) (phaseResult, error) {
	var res phaseResult
	pctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var wait func() error
	if attack != nil {
		var err error
		if wait, err = attack(pctx); err != nil {
			return res, err
		}
	}
	res.peak = readRSS()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var werr error
loop:
	for {
		select {
		case <-pctx.Done():
			break loop
		case <-tick.C:
		}
		res.peak = max(res.peak, readRSS())
		if h.onTick != nil {
			h.onTick()
		}
		if werr != nil {
			continue
		}
		h.seq++
		name := fmt.Sprintf("honest-%d", h.seq%50)
		if _, err := h.g.e.Write(ctx, &resource.Resource{Type: policyType, Mesh: benchMesh, Name: name, Spec: specOf(strconv.Itoa(h.seq), 1024)}); err != nil {
			werr = fmt.Errorf("global write: %w", err)
			continue
		}
		if _, err := h.z.e.Write(ctx, &resource.Resource{Type: statusType, Mesh: benchMesh, Name: name, Spec: specOf(strconv.Itoa(h.seq), 1024)}); err != nil {
			werr = fmt.Errorf("zone write: %w", err)
			continue
		}
		res.writes++
	}
	if wait != nil {
		if err := wait(); err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
			return res, fmt.Errorf("hostile zone: %w", err)
		}
	}
	res.peak = max(res.peak, readRSS())
	res.end = readRSS()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	res.heap = ms.HeapInuse
	return res, werr
}

// HostileZoneProcess runs the hostile zone of the hostile mode from its JSON
// description until ctx ends, then prints what it did as JSON on stdout:
// the body of the child process Hostile starts.
func HostileZoneProcess(ctx context.Context, attackJSON string) error {
	var tgt hostileTarget
	if err := json.Unmarshal([]byte(attackJSON), &tgt); err != nil {
		return fmt.Errorf("attack: %w", err)
	}
	stats, err := runAttack(ctx, tgt)
	if err != nil && ctx.Err() == nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(stats)
}

// runAttack drives the hostile mix against global until ctx ends.
func runAttack(ctx context.Context, tgt hostileTarget) (attackStats, error) {
	c := tgt.Config.withDefaults()
	tc, err := tlsutil.ClientConfig(tgt.CAFile, "", "", "localhost", hclog.NewNullLogger())
	if err != nil {
		return attackStats{}, err
	}
	conn, err := grpc.NewClient(tgt.Addr,
		grpc.WithTransportCredentials(credentials.NewTLS(tc)),
		// Small windows, and nothing read: global's sends to it stall.
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(64<<20), grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		return attackStats{}, err
	}
	defer conn.Close()
	mix, err := newHostileMix(c)
	if err != nil {
		return attackStats{}, err
	}
	var st struct{ sessions, messages, bytes, sendErrors atomic.Int64 }
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for range c.Sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				st.sessions.Add(1)
				mix.session(ctx, conn, tgt, c.Hold, func(n int, err error) {
					if err != nil {
						st.sendErrors.Add(1)
						firstErr.CompareAndSwap(nil, err.Error())
						return
					}
					st.messages.Add(1)
					st.bytes.Add(int64(n))
				})
			}
		}()
	}
	wg.Wait()
	out := attackStats{Sessions: st.sessions.Load(), Messages: st.messages.Load(), Bytes: st.bytes.Load(), SendErrors: st.sendErrors.Load()}
	if e, ok := firstErr.Load().(string); ok {
		out.FirstError = e
	}
	return out, nil
}

// hostileMix holds the messages a hostile session sends, built once.
type hostileMix struct {
	c         HostileConfig
	pushes    []*kdsv1.Message
	bigSub    *kdsv1.Message
	resub     *kdsv1.Message
	oversized *kdsv1.Message
}

func newHostileMix(c HostileConfig) (*hostileMix, error) {
	m := &hostileMix{c: c}
	// Pushed statuses, several per response, each response below global's
	// max message size.
	per := max((c.MaxMessageSize*3/4)/(c.PushSize+256), 1)
	var cur []*discovery.Resource
	flush := func() {
		if len(cur) == 0 {
			return
		}
		nonce := strconv.Itoa(len(m.pushes) + 1)
		m.pushes = append(m.pushes, &kdsv1.Message{Kind: &kdsv1.Message_Response{Response: &discovery.DeltaDiscoveryResponse{
			TypeUrl: kdssync.TypeURL(statusType), Nonce: nonce, SystemVersionInfo: nonce, Resources: cur,
		}}})
		cur = nil
	}
	for i := range c.Pushed {
		r := &resource.Resource{Type: statusType, Mesh: benchMesh, Name: fmt.Sprintf("hog-%d", i), Spec: specOf("hog", c.PushSize)}
		b, err := proto.Marshal(r.ToProto())
		if err != nil {
			return nil, err
		}
		cur = append(cur, &discovery.Resource{Name: kdssync.WireName(r.Mesh, r.Name), Version: "hog-1",
			Resource: &anypb.Any{TypeUrl: "type.googleapis.com/kds.v1.Resource", Value: b}})
		if len(cur) == per {
			flush()
		}
	}
	flush()
	held := make(map[string]string, c.HeldNames)
	for i := range c.HeldNames {
		held[fmt.Sprintf("default/name-%026d", i)] = "v-0000000000001"
	}
	m.bigSub = &kdsv1.Message{Kind: &kdsv1.Message_Request{Request: &discovery.DeltaDiscoveryRequest{
		TypeUrl: kdssync.TypeURL(policyType), ResourceNamesSubscribe: []string{"*"}, InitialResourceVersions: held,
	}}}
	m.resub = &kdsv1.Message{Kind: &kdsv1.Message_Request{Request: &discovery.DeltaDiscoveryRequest{
		TypeUrl: kdssync.TypeURL(policyType), ResourceNamesSubscribe: []string{"*"},
	}}}
	m.oversized = &kdsv1.Message{Kind: &kdsv1.Message_Request{Request: &discovery.DeltaDiscoveryRequest{
		TypeUrl: kdssync.TypeURL(policyType), ResourceNamesSubscribe: []string{strings.Repeat("x", c.MaxMessageSize+1)},
	}}}
	return m, nil
}

// session runs one hostile session: it announces the largest figures global
// accepts,
// pushes resources, subscribes with huge held-name lists, asks for unknown
// types, re-subscribes, never reads, and after hold sends a message over
// global's limit. sent is called for every Send.
func (m *hostileMix) session(ctx context.Context, conn *grpc.ClientConn, tgt hostileTarget, hold time.Duration, sent func(int, error)) {
	sctx, cancel := context.WithTimeout(ctx, hold+2*time.Second)
	defer cancel()
	md := metadata.Pairs(kdsgrpc.ZoneMetadataKey, tgt.Zone, "authorization", "Bearer "+tgt.Token,
		kdsgrpc.TypesMetadataKey, strconv.Itoa(kdsgrpc.MaxAnnouncedTypes),
		kdsgrpc.MaxMessageSizeMetadataKey, strconv.Itoa(kdsgrpc.MaxAnnouncedMessageSize))
	s, err := kdsv1.NewKDSClient(conn).Session(metadata.NewOutgoingContext(sctx, md))
	if err != nil {
		sent(0, err)
		return
	}
	send := func(msg *kdsv1.Message) bool {
		err := s.Send(msg)
		if errors.Is(err, io.EOF) {
			// The stream ended; its status says why.
			_, err = s.Recv()
		}
		sent(proto.Size(msg), err)
		return err == nil
	}
	for i := range m.c.UnknownTypes {
		if !send(&kdsv1.Message{Kind: &kdsv1.Message_Request{Request: &discovery.DeltaDiscoveryRequest{
			TypeUrl: kdssync.TypeURL(fmt.Sprintf("Unknown%d", i)),
		}}}) {
			return
		}
	}
	for range m.c.Resubscriptions {
		if !send(m.resub) {
			return
		}
	}
	for _, p := range m.pushes {
		if !send(p) {
			return
		}
	}
	for range m.c.BigSubscriptions {
		if !send(m.bigSub) {
			return
		}
	}
	select {
	case <-sctx.Done():
		return
	case <-time.After(hold):
	}
	send(m.oversized)
}

func storeFilter(typ, zone string) store.Filter { return store.Filter{Type: typ, Zone: zone} }

// sameVersions reports whether a and b hold the same mesh/name pairs at the
// same versions (zones aside).
func sameVersions(a, b []store.KeyVersion) bool {
	if len(a) != len(b) {
		return false
	}
	m := make(map[[2]string]string, len(a))
	for _, kv := range a {
		m[[2]string{kv.Key.Mesh, kv.Key.Name}] = kv.Version
	}
	for _, kv := range b {
		if v, ok := m[[2]string{kv.Key.Mesh, kv.Key.Name}]; !ok || v != kv.Version {
			return false
		}
	}
	return true
}
