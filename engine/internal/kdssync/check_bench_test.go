package kdssync

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
	"unsafe"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/kds-engine/kds-engine/engine/internal/resource"
)

type acceptAll struct{}

func (acceptAll) Validate(context.Context, []*resource.Resource) error { return nil }

// checkResponse is a response of n mesh-scoped resources of typ with
// specs of about size bytes, as a server sends them.
func checkResponse(b testing.TB, typ string, n, size int) *discovery.DeltaDiscoveryResponse {
	resp := &discovery.DeltaDiscoveryResponse{TypeUrl: TypeURL(typ), Nonce: "1"}
	for i := range n {
		r := res(typ, "default", fmt.Sprintf("policy-%06d", i), fmt.Sprintf("e1-%d", i+1), size)
		r.CreationTime, r.ModificationTime = time.Unix(1700000000, 0).UTC(), time.Unix(1700000000, 0).UTC()
		env, err := proto.Marshal(r.ToProto())
		if err != nil {
			b.Fatal(err)
		}
		resp.Resources = append(resp.Resources, &discovery.Resource{
			Name: WireName(r.Mesh, r.Name), Version: r.Version,
			Resource: &anypb.Any{TypeUrl: resourceTypeURL, Value: env},
		})
	}
	return resp
}

// BenchmarkClientCheck: what the checking stage does with the first
// response of an initial sync (3,334 resources of 1 KiB, a validator that
// accepts everything), per resource.
func BenchmarkClientCheck(b *testing.B) {
	const typ, n = "T", 3334
	resp := checkResponse(b, typ, n, 1000)
	c := NewClient([]string{typ}, nil, acceptAll{}, "global", "")
	b.ReportAllocs()
	for b.Loop() {
		c.held[typ] = newHeldRecord(nil) // the first response of an initial sync
		ch, err := c.check(context.Background(), resp)
		if err != nil || len(ch.puts) != n {
			b.Fatalf("check: %v, %d puts", err, len(ch.puts))
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/resource")
}

// Checking a response allocates no strings and no resource per put: the
// type, mesh, name and version of each decoded resource share the wire
// resource's strings, the names it records as held are the wire names, the
// decoded resources are allocated together, and names in the order
// servers send them are known to be distinct without a map.
func TestCheckSharesWireStrings(t *testing.T) {
	const typ, n = "T", 200
	resp := checkResponse(t, typ, n, 100)
	c := NewClient([]string{typ}, nil, acceptAll{}, "global", "")
	var ch *checked
	allocs := testing.AllocsPerRun(20, func() {
		c.held[typ] = &heldRecord{m: map[string]string{}, tail: make([]heldName, 0, n)}
		var err error
		if ch, err = c.check(context.Background(), resp); err != nil || len(ch.puts) != n {
			t.Fatalf("check: %v, %d puts", err, len(ch.puts))
		}
	})
	if per := allocs / n; per > 0.1 {
		t.Errorf("%.2f allocations per resource, want at most 0.1", per)
	}
	for i, p := range ch.puts {
		wr := resp.Resources[i]
		if unsafe.StringData(p.Version) != unsafe.StringData(wr.Version) || unsafe.StringData(ch.accepted[i]) != unsafe.StringData(wr.Name) {
			t.Fatalf("put %d (%s) does not share its wire resource's strings", i, wr.Name)
		}
	}
}

// A name listed twice in one response (twice among the resources, or as a
// resource and a removal) is refused, whatever the order of the names.
func TestCheckRefusesNamesListedTwice(t *testing.T) {
	const typ = "T"
	for name, edit := range map[string]func(*discovery.DeltaDiscoveryResponse){
		"adjacent":     func(r *discovery.DeltaDiscoveryResponse) { r.Resources[2] = r.Resources[1] },
		"apart":        func(r *discovery.DeltaDiscoveryResponse) { r.Resources[3] = r.Resources[0] },
		"also removed": func(r *discovery.DeltaDiscoveryResponse) { r.RemovedResources = []string{r.Resources[1].Name} },
	} {
		t.Run(name, func(t *testing.T) {
			resp := checkResponse(t, typ, 4, 10)
			edit(resp)
			c := NewClient([]string{typ}, nil, acceptAll{}, "global", "")
			c.held[typ] = newHeldRecord(nil)
			ch, err := c.check(context.Background(), resp)
			if err != nil || ch.whole != nil {
				t.Fatal(err, ch.whole)
			}
			if len(ch.rejected) < 2 {
				t.Fatalf("%d refused, want both entries of the name listed twice", len(ch.rejected))
			}
			for _, r := range ch.rejected {
				if msg := strings.Join(fieldErrors(r.GetErrors()), "; "); !strings.Contains(msg, "more than once") {
					t.Fatalf("refused %s: %s", r.GetName(), msg)
				}
			}
		})
	}
}
