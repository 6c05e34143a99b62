package kdssync

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/stretchr/testify/require"

	"github.com/kds-engine/kds-engine/engine/internal/insights"
)

// queueStream is a ServerStream that keeps what the server sends, without
// encoding it, for the benchmark to answer.
type queueStream struct {
	ctx   context.Context
	resps []*discovery.DeltaDiscoveryResponse
}

func (s *queueStream) Send(r *discovery.DeltaDiscoveryResponse) error {
	s.resps = append(s.resps, r)
	return nil
}

func (s *queueStream) RecvContext(ctx context.Context) (*discovery.DeltaDiscoveryRequest, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

func (s *queueStream) Context() context.Context { return s.ctx }

// BenchmarkServeFreshSync is global's serving session during a zone's
// initial sync: a fresh peer subscribes to names= resources of 1 KiB
// (4 MiB responses) and ACKs every response as it arrives, the session
// driven through handle as Serve's loop drives it. sorted= says whether
// the index still has its names sorted from an earlier subscriber (false:
// the subscription sorts them, as the first zone after a start does). It
// reports the session's time per served name.
func BenchmarkServeFreshSync(b *testing.B) {
	for _, c := range []struct {
		names  int
		sorted bool
	}{{100_000, false}, {100_000, true}} {
		b.Run(fmt.Sprintf("names=%d/sorted=%t", c.names, c.sorted), func(b *testing.B) {
			ix := NewIndex([]string{"T"})
			for i := range c.names {
				if err := ix.Put(res("T", "default", fmt.Sprintf("p-%d", i), "1", 1000)); err != nil {
					b.Fatal(err)
				}
			}
			ti := ix.types["T"]
			srv := NewServer(ix, WithServerInsights(insights.NewRegistry()))
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			b.ReportAllocs()
			for b.Loop() {
				b.StopTimer()
				if !c.sorted {
					ix.mu.Lock()
					ti.namesChanged()
					ix.mu.Unlock()
				}
				qs := &queueStream{ctx: ctx}
				ss := &serverSession{
					Server: srv, maxMsg: srv.maxMsg, stream: qs, peer: "zone-1", log: srv.log,
					types: map[string]*serveState{}, unknown: map[string]struct{}{},
					notify: make(chan struct{}, 1), wake: make(chan struct{}, 1),
					resuming:      map[string]*resumeState{},
					sessionBudget: DefaultSessionBudgetMessages * int64(srv.maxMsg),
				}
				b.StartTimer()
				ss.answering = true
				if err := ss.handle(&discovery.DeltaDiscoveryRequest{TypeUrl: TypeURL("T"), ResourceNamesSubscribe: []string{"*"}}); err != nil {
					b.Fatal(err)
				}
				got := 0
				for len(qs.resps) > 0 {
					r := qs.resps[0]
					qs.resps = qs.resps[1:]
					got += len(r.Resources)
					if err := ss.handle(&discovery.DeltaDiscoveryRequest{TypeUrl: r.TypeUrl, ResponseNonce: r.Nonce}); err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				if got != c.names {
					b.Fatalf("sent %d resources, want %d", got, c.names)
				}
				ss.close()
				b.StartTimer()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(c.names), "ns/name")
		})
	}
}

// compareWireNamesRef is the order compareWireNames gives, by its
// definition: bytewise, '/' below every other byte, a prefix first.
func compareWireNamesRef(a, b string) int {
	key := func(s string) []int {
		k := make([]int, len(s))
		for i := range len(s) {
			k[i] = int(s[i]) + 1
			if s[i] == '/' {
				k[i] = 0
			}
		}
		return k
	}
	return slices.Compare(key(a), key(b))
}

func sign(n int) int { return cmp.Compare(n, 0) }

// compareWireNames agrees with the definition on canonical names (one mesh
// length or several, global-scoped names) and on any other strings.
func TestCompareWireNames(t *testing.T) {
	names := []string{"", "/", "//", "a", "a/", "/a", "a/b", "a/b/c", "a-b/c", "a.b/c", "ab/c", "a/b-c", "a/bc", "a/b.c",
		"default/p-1", "default/p-10", "default/p-2", "default-2/p-1", "mesh/p-1", "defaul/z", "default", "default/", "p-1", "~", "a\x00/b"}
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := "ab-./~\x00"
	for range 2000 {
		b := make([]byte, rng.IntN(7))
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		names = append(names, string(b))
	}
	for _, a := range names {
		for _, b := range names {
			if got, want := sign(compareWireNames(a, b)), sign(compareWireNamesRef(a, b)); got != want {
				t.Fatalf("compareWireNames(%q, %q) = %d, want %d", a, b, got, want)
			}
		}
	}
}

func FuzzCompareWireNames(f *testing.F) {
	f.Add("default/p-1", "default-2/p-1")
	f.Add("a/b", "a-b")
	f.Fuzz(func(t *testing.T, a, b string) {
		if got, want := sign(compareWireNames(a, b)), sign(compareWireNamesRef(a, b)); got != want {
			t.Fatalf("compareWireNames(%q, %q) = %d, want %d", a, b, got, want)
		}
	})
}

// BenchmarkSortWireNames sorts 100k shuffled wire names of one mesh, as a
// fresh subscription does: with sortWireNames (keyed), with
// compareWireNames alone (compare) and with the byte-at-a-time comparison
// (bytes).
func BenchmarkSortWireNames(b *testing.B) {
	names := make([]string, 100_000)
	for i := range names {
		names[i] = WireName("default", fmt.Sprintf("p-%d", i))
	}
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(names), func(i, j int) { names[i], names[j] = names[j], names[i] })
	for _, c := range []struct {
		name string
		sort func([]string)
	}{
		{"keyed", sortWireNames},
		{"compare", func(s []string) { slices.SortFunc(s, compareWireNames) }},
		{"bytes", func(s []string) { slices.SortFunc(s, compareWireNamesBytes) }},
	} {
		b.Run(c.name, func(b *testing.B) {
			s := make([]string, len(names))
			for b.Loop() {
				copy(s, names)
				c.sort(s)
			}
		})
	}
}

// sortWireNames gives compareWireNames' order, for names with long shared
// prefixes, ties in the packed bytes, slashes and bytes around '/'.
func TestSortWireNames(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	alphabet := "ab-./~\x00\xff"
	for round := range 500 {
		prefix := []string{"", "default/", "default/p-", "m/abcdefghij"}[round%4]
		names := make([]string, rng.IntN(40)+[]int{0, 300}[round%2])
		for i := range names {
			b := make([]byte, rng.IntN(12))
			for j := range b {
				b[j] = alphabet[rng.IntN(len(alphabet))]
			}
			names[i] = prefix + string(b)
		}
		if round%3 == 0 && len(names) > 100 {
			// The first names share more than the rest: the prefix
			// taken from them does not hold for all.
			for i := range 80 {
				names[i] = "default/p-" + names[i]
			}
		}
		want := slices.Clone(names)
		slices.SortStableFunc(want, compareWireNames)
		ents := make([]entry, len(names))
		for i, n := range names {
			ents[i] = entry{res: &discovery.Resource{Name: n}}
		}
		if round%2 == 0 {
			sortWireNames(names)
		} else {
			sortWireNamesWith(names, ents)
			for i, e := range ents {
				require.Equal(t, names[i], e.res.GetName(), "round %d: the entries move with the names", round)
			}
		}
		require.Equal(t, want, names, "round %d", round)
	}
}

// FuzzSortWireNames checks sortWireNames against compareWireNames on any
// names: empty ones, names listed twice, long shared prefixes, names that
// differ only past the 7 bytes it packs, bytes around '/', and names
// without the prefix the first ones share. data holds the names separated
// by 0xff; prefix is put before each.
func FuzzSortWireNames(f *testing.F) {
	f.Add("m/resource-0000000-", []byte("a\xffb\xff\xffa\xff/x\xff-\xff.\xff"))
	f.Add("", []byte("default/p-1\xffdefault-2/p-1\xffdefault/p-10\xffa/b\xffa-b"))
	f.Fuzz(func(t *testing.T, prefix string, data []byte) {
		var names []string
		for i, s := range bytes.Split(data, []byte{0xff}) {
			if i%5 == 4 {
				names = append(names, string(s)) // without the prefix
				continue
			}
			names = append(names, prefix+string(s))
		}
		want := slices.Clone(names)
		slices.SortStableFunc(want, compareWireNames)
		ents := make([]entry, len(names))
		for i, n := range names {
			ents[i] = entry{res: &discovery.Resource{Name: n}}
		}
		got := slices.Clone(names)
		sortWireNames(got)
		require.Equal(t, want, got)
		sortWireNamesWith(names, ents)
		require.Equal(t, want, names)
		for i, e := range ents {
			require.Equal(t, names[i], e.res.GetName(), "the entries move with the names")
		}
	})
}
