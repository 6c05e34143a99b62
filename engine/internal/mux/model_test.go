package mux

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kds-engine/kds-engine/engine/internal/kdssync"
)

var updateModel = flag.Bool("update-model", false, "rewrite model/params.pml from the Go constants")

// modelParams is the path of the spin model's constants, from this package.
var modelParams = filepath.Join("..", "..", "..", "model", "params.pml")

// renderModelParams writes the constants of the spin model (model/kds.pml)
// from the Go code.
func renderModelParams() string {
	return fmt.Sprintf(`/*
 * Constants of the KDS session model that come from the Go code. Do not edit
 * by hand: engine/internal/mux's TestModelParams compares every value with
 * the Go constant it names and fails when they disagree; run
 *   go test ./engine/internal/mux -run TestModelParams -update-model
 * to rewrite this file from the Go code.
 */

/* kdssync.DefaultWindow: responses per type a server keeps in flight */
#define WINDOW %d

/* mux.DefaultHeadroom: extra slots of every send buffer and inbound queue */
#define HEADROOM %d

/* mux.Params: every send buffer and inbound queue holds types x window + headroom */
#define CAPACITY(types) ((types) * WINDOW + HEADROOM)
`, kdssync.DefaultWindow, DefaultHeadroom)
}

// TestModelParams keeps the spin model's constants equal to the Go code's:
// the window, the headroom, and the capacity formula as NewSession computes
// it for the type counts the model checks.
func TestModelParams(t *testing.T) {
	if *updateModel {
		require.NoError(t, os.WriteFile(modelParams, []byte(renderModelParams()), 0o644))
	}
	b, err := os.ReadFile(modelParams)
	require.NoError(t, err)
	src := string(b)

	define := func(name string) int {
		t.Helper()
		m := regexp.MustCompile(`(?m)^#define ` + name + ` (\d+)\s*$`).FindStringSubmatch(src)
		require.NotNil(t, m, "model/params.pml defines no %s", name)
		n, err := strconv.Atoi(m[1])
		require.NoError(t, err)
		return n
	}
	hint := "model/params.pml disagrees with the Go code; run go test ./engine/internal/mux -run TestModelParams -update-model"
	require.Equal(t, kdssync.DefaultWindow, define("WINDOW"), "WINDOW is kdssync.DefaultWindow: %s", hint)
	require.Equal(t, DefaultHeadroom, define("HEADROOM"), "HEADROOM is mux.DefaultHeadroom: %s", hint)
	require.Regexp(t, `(?m)^#define CAPACITY\(types\) \(\(types\) \* WINDOW \+ HEADROOM\)\s*$`, src,
		"CAPACITY is the formula of mux.Params: %s", hint)
	require.Equal(t, renderModelParams(), src, hint)

	// The formula the model uses is the one NewSession applies, for the
	// type counts the model is checked with (1 and 2 per side).
	for _, types := range []int{1, 2} {
		s := NewSession(&idle{ctx: context.Background()}, types, WithWindow(kdssync.DefaultWindow))
		p := s.Params()
		want := types*define("WINDOW") + define("HEADROOM")
		require.Equal(t, want, p.ClientCapacity, "client capacity for %d types", types)
		require.Equal(t, want, p.ServerCapacity, "server capacity for %d types", types)
	}
}
