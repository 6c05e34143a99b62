package engine

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/kds-engine/kds-engine/engine/internal/insights"
	"github.com/kds-engine/kds-engine/engine/internal/resource"
	"github.com/kds-engine/kds-engine/engine/internal/store"
)

// scaleEnv, set to 1, runs TestUIScale (a minute or two; not part of the
// normal suite). docs/ui.md has its figures.
const scaleEnv = "KDS_ENGINE_UI_SCALE"

// TestUIScale measures what one refresh of each UI page costs on a global
// holding 100,000 resources with 100 zones: the admin API requests each
// page's poll makes (served by the real engine and store), and, when
// Chromium is installed, the page's own time for one poll (requests, JSON,
// and the DOM update when the data changed). The zones are recorded in
// global's insights as if connected (100 engines do not fit a test
// machine); the resources are real, in the real store.
func TestUIScale(t *testing.T) {
	if os.Getenv(scaleEnv) != "1" {
		t.Skipf("set %s=1 to measure the UI's refresh cost at 100 zones and 100k resources", scaleEnv)
	}
	const nZones, nResources = 100, 100_000
	g := startGlobal(t, builtinDir)
	ctx := context.Background()
	start := time.Now()
	rs := make([]*resource.Resource, nResources)
	for i := range rs {
		rs[i] = meshTimeout(fmt.Sprintf("mt-%06d", i), "5s")
		rs[i].Labels = map[string]string{"team": fmt.Sprintf("team-%d", i%10)}
	}
	require.NoError(t, g.e.BulkLoad(ctx, rs))
	t.Logf("loaded %d resources in %s", nResources, time.Since(start).Round(time.Millisecond))

	types := []string{"Mesh", "MeshTimeout", "MeshRetry", "MeshRateLimit", "MeshTrafficPermission", "Dataplane", "DataplaneInsight"}
	ins := g.e.Insights()
	touch := func(i int) {
		zone := fmt.Sprintf("zone-%03d", i%nZones)
		for _, typ := range types {
			ins.UpdateType(zone, typ, func(ts *insights.TypeState) {
				ts.ResourcesSent += 1000
				ts.ResponsesSent++
				ts.ResponsesACKed++
				ts.LastACK = time.Now()
				ts.ResourcesHeld = nResources / len(types)
			})
		}
	}
	for i := range nZones {
		zone := fmt.Sprintf("zone-%03d", i)
		ins.Connected(zone)
		ins.SetSession(zone, fmt.Sprintf("10.0.%d.%d:40000", i/250, i%250), fmt.Sprintf("%032x", i))
		ins.SetStreams(zone, []insights.StreamState{
			{Name: "global_to_zone", Role: "server", SendBufferHighWater: 7, Capacity: 46},
			{Name: "zone_to_global", Role: "client", SendBufferHighWater: 3, Capacity: 46},
		})
		touch(i)
		if i%10 == 9 {
			ins.Disconnected(zone, fmt.Errorf("send timeout: Send did not return within 1m0s"))
		}
	}

	for range 3 {
		t0 := time.Now()
		kvs, err := g.e.store.Versions(ctx, store.Filter{Type: "MeshTimeout"})
		require.NoError(t, err)
		t1 := time.Now()
		all, err := g.e.store.List(ctx, store.Filter{Type: "MeshTimeout"})
		require.NoError(t, err)
		t.Logf("store: versions of %d in %s, list of %d in %s", len(kvs), t1.Sub(t0), len(all), time.Since(t1))
	}

	base := "http://" + g.e.APIAddr().String()
	for _, route := range []struct{ page, path string }{
		{"zones, sync health", "/api/v1/zones"},
		{"plugins", "/api/v1/plugins"},
		{"resources (revision check)", "/api/v1/revision"},
		{"resources (first page)", "/api/v1/resources/MeshTimeout?limit=50"},
		{"resources (search)", "/api/v1/resources/MeshTimeout?limit=50&q=mt-0999"},
		{"resources (label)", "/api/v1/resources/MeshTimeout?limit=50&label=team=team-3"},
		{"resource detail", "/api/v1/resources/MeshTimeout/mt-050000?mesh=default"},
		{"resource detail (holders)", "/api/v1/holders/MeshTimeout/mt-050000?mesh=default"},
	} {
		var times []time.Duration
		var size int
		for range 15 {
			t0 := time.Now()
			resp, err := http.Get(base + route.path)
			require.NoError(t, err)
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			require.NoError(t, err)
			require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
			times = append(times, time.Since(t0))
			size = len(body)
		}
		slices.Sort(times)
		t.Logf("API %-28s %-58s median %8s  max %8s  %7d bytes", route.page, route.path,
			times[len(times)/2].Round(10*time.Microsecond), times[len(times)-1].Round(10*time.Microsecond), size)
	}

	if _, err := lookChromium(); err != nil {
		t.Logf("no Chromium (%v): browser figures skipped", err)
		return
	}
	b := newBrowser(t)
	var churn atomic.Bool // also rewrite a listed resource every 200ms
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { // every poll sees a change, so every poll redraws
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
				touch(i)
				if churn.Load() {
					r := meshTimeout("mt-000000", fmt.Sprintf("%ds", i%50+1))
					if _, err := g.e.Write(ctx, r); err != nil {
						t.Errorf("write: %v", err)
					}
				}
			}
		}
	}()
	defer func() { close(stop); <-done }()
	for _, page := range []struct {
		name, hash, ready string
		churn             bool
	}{
		{"zones", "#/zones", `document.querySelectorAll('table.zones > tbody > tr').length === 100`, false},
		{"sync health", "#/sync", `document.querySelectorAll('section.conn').length === 100`, false},
		{"resources (no resource changed)", "#/resources?type=MeshTimeout", `document.querySelectorAll('table.resources tbody tr').length === 50`, false},
		{"resources (one changes every 200ms)", "#/resources?type=MeshTimeout", `document.querySelectorAll('table.resources tbody tr').length === 50`, true},
	} {
		churn.Store(page.churn)
		b.run(chromedp.Navigate(base + "/ui/" + page.hash))
		b.waitJS(page.name, page.ready)
		var ms []int
		last := ""
		for len(ms) < 10 {
			var polls, pollMs string
			require.NoError(t, b.eval(`document.body.dataset.polls||''`, &polls))
			if polls != last && polls != "" {
				require.NoError(t, b.eval(`document.body.dataset.pollMs`, &pollMs))
				n, _ := strconv.Atoi(pollMs)
				ms = append(ms, n)
				last = polls
			}
			time.Sleep(100 * time.Millisecond)
		}
		slices.Sort(ms)
		t.Logf("browser %-36s one poll (requests + JSON + DOM update): median %d ms, max %d ms over %d polls", page.name, ms[len(ms)/2], ms[len(ms)-1], len(ms))
	}
}
