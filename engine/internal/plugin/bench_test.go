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
	kdsv1 "github.com/kds-engine/kds-engine/proto/kds/v1"
	pluginv1 "github.com/kds-engine/kds-engine/proto/plugin/v1"
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
			req := &pluginv1.ValidateRequest{Resources: make([]*kdsv1.Resource, len(batch))}
			for j, k := range batch {
				req.Resources[j] = rs[k].ToProto()
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
