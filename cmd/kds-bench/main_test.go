package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// -o json prints exactly one JSON line holding the mode, the verdict and
// every figure.
func TestTransportJSONLine(t *testing.T) {
	var out, errOut bytes.Buffer
	root := newRoot(&out, &errOut)
	root.SetArgs([]string{"transport", "--rounds", "1", "--small-messages", "64", "--large-messages", "32", "-o", "json"})
	require.NoError(t, root.ExecuteContext(context.Background()))
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	require.Len(t, lines, 1, "one JSON line on stdout, progress on stderr")
	var got struct {
		Mode    string             `json:"mode"`
		Target  string             `json:"target"`
		Result  string             `json:"result"`
		Figures map[string]float64 `json:"figures"`
	}
	require.NoError(t, json.Unmarshal([]byte(lines[0]), &got))
	assert.Equal(t, "transport", got.Mode)
	assert.NotEmpty(t, got.Target)
	assert.Contains(t, []string{"PASS", "MISS"}, got.Result)
	for _, k := range []string{"1kib_raw_mbps", "1kib_engine_mbps", "1kib_ratio", "64kib_raw_mbps", "64kib_engine_mbps", "64kib_ratio"} {
		assert.Positive(t, got.Figures[k], k)
	}
	assert.Contains(t, errOut.String(), "transport 1 KiB: done", "plain progress lines when stdout is not a terminal")
}

// The table output ends with the target and a plain verdict.
func TestTableVerdict(t *testing.T) {
	var out bytes.Buffer
	root := newRoot(&out, &bytes.Buffer{})
	root.SetArgs([]string{"transport", "--rounds", "1", "--small-messages", "64", "--large-messages", "32", "--no-progress"})
	require.NoError(t, root.ExecuteContext(context.Background()))
	s := strings.TrimSpace(out.String())
	assert.Contains(t, s, "engine/raw")
	assert.Contains(t, s, "target: engine session")
	assert.True(t, strings.HasSuffix(s, "PASS") || strings.HasSuffix(s, "MISS"), s)
}

func TestUnknownOutput(t *testing.T) {
	root := newRoot(&bytes.Buffer{}, &bytes.Buffer{})
	root.SetArgs([]string{"transport", "--rounds", "1", "--small-messages", "32", "--large-messages", "32", "-o", "xml", "--no-progress"})
	assert.ErrorContains(t, root.ExecuteContext(context.Background()), `output "xml"`)
}
