package engine

import (
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
)

// findSeries returns the first series of metric name on n whose labels
// include labels, or nil.
func findSeries(t *testing.T, n *node, name string, labels map[string]string) *dto.Metric {
	t.Helper()
	mfs, err := n.e.promReg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue series
				}
			}
			return m
		}
	}
	return nil
}

// seriesValue returns the value of the first series of metric name on n
// whose labels include labels (a counter or a gauge), and whether there is
// one.
func seriesValue(t *testing.T, n *node, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	m := findSeries(t, n, name, labels)
	if m == nil {
		return 0, false
	}
	if c := m.GetCounter(); c != nil {
		return c.GetValue(), true
	}
	return m.GetGauge().GetValue(), true
}

// seriesValueOf is seriesValue's value (0 when there is no such series).
func seriesValueOf(t *testing.T, n *node, name string, labels map[string]string) float64 {
	t.Helper()
	v, _ := seriesValue(t, n, name, labels)
	return v
}
