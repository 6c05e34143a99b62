package plugin

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/require"

	"github.com/kds-engine/kds-engine/engine/internal/plugin/testplugins/fixture"
	"github.com/kds-engine/kds-engine/engine/internal/resource"
	pluginv1 "github.com/kds-engine/kds-engine/sdk/proto/plugin/v1"
)

// BenchmarkValidatePluginVsInProcess validates 10,000 resources of about
// 1 KiB each through a real plugin process (Host.Validate: batches of 1000
// over go-plugin gRPC) and through the same validator called in-process
// (same batches, same protobuf request, no process boundary), alternating
// the two in every iteration. It reports the cost per resource of each and
// their ratio.
//
//	go test -run '^$' -bench ValidatePluginVsInProcess -benchtime 20x ./engine/internal/plugin
func BenchmarkValidatePluginVsInProcess(b *testing.B) {
	const n = 10_000
	dir := b.TempDir()
	bin, err := os.ReadFile(filepath.Join(binDir, "testplugin"))
	require.NoError(b, err)
	require.NoError(b, os.WriteFile(filepath.Join(dir, FilePrefix+"alpha"), bin, 0o755))
	h := NewHost(dir, hclog.NewNullLogger(), WithBatchSize(1000))
	require.NoError(b, h.Start(context.Background()))
	defer func() { require.NoError(b, h.Close()) }()

	srv, err := fixture.Server("alpha", "")
	require.NoError(b, err)

	rs := make([]*resource.Resource, n)
	pad := strings.Repeat("x", 980)
	for i := range rs {
		spec, _ := json.Marshal(map[string]any{"value": fmt.Sprintf("value-%d", i), "pad": pad})
		rs[i] = &resource.Resource{Type: "AlphaOne", Mesh: "default", Name: fmt.Sprintf("resource-%05d", i), Spec: spec}
	}
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	ctx := context.Background()
	inProcess := func() error {
		invalid := map[int][]resource.FieldError{}
		for _, batch := range batches(rs, idx, 1000, MaxBatchBytes) {
			req := &pluginv1.ValidateRequest{Resources: make([]*pluginv1.Resource, len(batch))}
			for j, k := range batch {
				req.Resources[j] = ToPlugin(rs[k])
			}
			resp, err := srv.Validate(ctx, req)
			if err != nil {
				return err
			}
			for _, inv := range resp.GetInvalid() {
				invalid[batch[inv.GetIndex()]] = append(invalid[batch[inv.GetIndex()]], resource.FieldError{})
			}
		}
		return validationError(rs, invalid)
	}
	// Warm up both paths.
	require.NoError(b, inProcess())
	require.NoError(b, h.Validate(ctx, rs))

	var inproc, viaPlugin time.Duration
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		run := func(f func() error, into *time.Duration) {
			start := time.Now()
			if err := f(); err != nil {
				b.Fatal(err)
			}
			*into += time.Since(start)
		}
		if i%2 == 0 {
			run(inProcess, &inproc)
			run(func() error { return h.Validate(ctx, rs) }, &viaPlugin)
		} else {
			run(func() error { return h.Validate(ctx, rs) }, &viaPlugin)
			run(inProcess, &inproc)
		}
	}
	iters := float64(b.N)
	b.ReportMetric(float64(viaPlugin.Nanoseconds())/iters/n, "plugin-ns/resource")
	b.ReportMetric(float64(inproc.Nanoseconds())/iters/n, "inproc-ns/resource")
	b.ReportMetric(float64(viaPlugin)/float64(inproc), "ratio")
}

// BenchmarkPluginAutoMTLS measures what go-plugin's AutoMTLS adds to a
// plugin connection, launching the same plugin with and without it in
// every iteration (the order alternating): the start (checks, exec,
// handshake and Describe, as at every start and restart), the round trip
// of a Validate RPC with one small resource, and one with a batch of 1000
// resources of about 1 KiB (1 MiB). It reports each side and the ratios
// with/without.
//
//	go test -run '^$' -bench PluginAutoMTLS -benchtime 20x ./engine/internal/plugin
func BenchmarkPluginAutoMTLS(b *testing.B) {
	const rtts, batches = 50, 5
	dir := b.TempDir()
	bin, err := os.ReadFile(filepath.Join(binDir, "testplugin"))
	require.NoError(b, err)
	path := filepath.Join(dir, FilePrefix+"alpha")
	require.NoError(b, os.WriteFile(path, bin, 0o755))
	withTLS := NewHost(dir, hclog.NewNullLogger())
	plain := NewHost(dir, hclog.NewNullLogger())
	plain.plainConn = true
	m := &managed{name: "alpha", path: path, log: hclog.NewNullLogger()}

	one := &pluginv1.ValidateRequest{Resources: []*pluginv1.Resource{
		ToPlugin(&resource.Resource{Type: "AlphaOne", Mesh: "default", Name: "one", Spec: json.RawMessage(`{"value":"x"}`)}),
	}}
	big := &pluginv1.ValidateRequest{}
	pad := strings.Repeat("x", 980)
	for i := range 1000 {
		spec, _ := json.Marshal(map[string]any{"value": fmt.Sprintf("value-%d", i), "pad": pad})
		big.Resources = append(big.Resources, ToPlugin(&resource.Resource{Type: "AlphaOne", Mesh: "default", Name: fmt.Sprintf("r-%04d", i), Spec: spec}))
	}

	type totals struct{ start, rtt, batch time.Duration }
	ctx := context.Background()
	measure := func(h *Host, into *totals) {
		t0 := time.Now()
		inst, err := h.launch(ctx, m, nil)
		if err != nil {
			b.Fatal(err)
		}
		defer inst.client.Kill()
		into.start += time.Since(t0)
		for range rtts {
			t0 = time.Now()
			if _, err := inst.conn.Validate(ctx, one); err != nil {
				b.Fatal(err)
			}
			into.rtt += time.Since(t0)
		}
		for range batches {
			t0 = time.Now()
			if _, err := inst.conn.Validate(ctx, big); err != nil {
				b.Fatal(err)
			}
			into.batch += time.Since(t0)
		}
	}
	var warm totals
	measure(withTLS, &warm)
	measure(plain, &warm)

	var on, off totals
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if i%2 == 0 {
			measure(withTLS, &on)
			measure(plain, &off)
		} else {
			measure(plain, &off)
			measure(withTLS, &on)
		}
	}
	n := float64(b.N)
	b.ReportMetric(float64(on.start.Microseconds())/n/1000, "start-ms-mtls")
	b.ReportMetric(float64(off.start.Microseconds())/n/1000, "start-ms-plain")
	b.ReportMetric(float64(on.start)/float64(off.start), "start-ratio")
	b.ReportMetric(float64(on.rtt.Nanoseconds())/n/rtts/1000, "rtt-us-mtls")
	b.ReportMetric(float64(off.rtt.Nanoseconds())/n/rtts/1000, "rtt-us-plain")
	b.ReportMetric(float64(on.rtt)/float64(off.rtt), "rtt-ratio")
	b.ReportMetric(float64(on.batch.Microseconds())/n/batches/1000, "batch1000-ms-mtls")
	b.ReportMetric(float64(off.batch.Microseconds())/n/batches/1000, "batch1000-ms-plain")
	b.ReportMetric(float64(on.batch)/float64(off.batch), "batch1000-ratio")
}
