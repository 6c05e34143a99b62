package kdssync

import (
	"bytes"
	"testing"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
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
