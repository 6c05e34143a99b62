package engine

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// seriesValue returns the value of the first series of metric name on n
// whose labels include labels, and whether there is one.
func seriesValue(t *testing.T, n *node, name string, labels map[string]string) (float64, bool) {
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
			if c := m.GetCounter(); c != nil {
				return c.GetValue(), true
			}
			return m.GetGauge().GetValue(), true
		}
	}
	return 0, false
}

// seriesValueOf is seriesValue's value (0 when there is no such series).
func seriesValueOf(t *testing.T, n *node, name string, labels map[string]string) float64 {
	t.Helper()
	v, _ := seriesValue(t, n, name, labels)
	return v
}
