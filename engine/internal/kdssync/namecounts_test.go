package kdssync

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"testing"
	"unsafe"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"

	"github.com/kds-engine/kds-engine/engine/internal/resource"
)

// FuzzNameCounts: the check skips the duplicate-name map only when no
// name can appear twice. names is split at NUL bytes into resource names
// (NUL itself never reaches a name here); a leading 0x01 adds a removal.
func FuzzNameCounts(f *testing.F) {
	for _, s := range []string{"a\x00b", "a\x00a", "a/b\x00a\x00b", "a\x00a/", "/a\x00a", "a\x00b\x00a", "\x01a\x00b", "\x00", "m/a\x00m/a", "m/\xff\x00m//"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		resp := &discovery.DeltaDiscoveryResponse{}
		if len(b) > 0 && b[0] == 1 {
			resp.RemovedResources = []string{"r"}
			b = b[1:]
		}
		seen := map[string]bool{}
		dup := false
		for _, name := range bytes.Split(b, []byte{0}) {
			dup = dup || seen[string(name)]
			seen[string(name)] = true
			resp.Resources = append(resp.Resources, &discovery.Resource{Name: string(name)})
		}
		if nameCounts(resp) == nil && (dup || len(resp.RemovedResources) > 0) {
			t.Fatalf("no duplicate-name map for %q (removals %q)", b, resp.RemovedResources)
		}
	})
}

// Resources refused before their envelope is read (here: no version) cost
// their rejection, not a decoded resource each: a zone's flood of them
// (a few bytes each on the wire) must not make global allocate a
// resource.Resource (160 bytes) per entry besides.
func TestRefusedResourcesTakeNoDecodedResource(t *testing.T) {
	const typ, n = "T", 20000
	resp := &discovery.DeltaDiscoveryResponse{TypeUrl: TypeURL(typ), Nonce: "1"}
	for i := range n {
		resp.Resources = append(resp.Resources, &discovery.Resource{Name: fmt.Sprintf("default/p-%06d", i)})
	}
	c := NewClient([]string{typ}, nil, acceptAll{}, "global", "")
	c.held[typ] = newHeldRecord(nil)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	ch, err := c.check(context.Background(), resp)
	runtime.ReadMemStats(&after)
	if err != nil || len(ch.rejected) != n {
		t.Fatalf("check: %v, %d refused", err, len(ch.rejected))
	}
	// Measured (n = 20,000): 422 bytes per refused resource with a
	// decoded resource each, 262 without.
	per := (after.TotalAlloc - before.TotalAlloc) / n
	t.Logf("%d bytes per refused resource", per)
	if per > 350 {
		t.Fatalf("%d bytes allocated per refused resource, want at most 350 (a decoded resource is %d)", per, unsafe.Sizeof(resource.Resource{}))
	}
}
