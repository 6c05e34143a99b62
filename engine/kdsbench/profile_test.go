package kdsbench

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestStartCPUProfile(t *testing.T) {
	stop, err := StartCPUProfile("")
	require.NoError(t, err)
	require.NoError(t, stop())

	path := filepath.Join(t.TempDir(), "cpu.prof")
	stop, err = StartCPUProfile(path)
	require.NoError(t, err)
	_, err = StartCPUProfile(filepath.Join(t.TempDir(), "second.prof"))
	require.Error(t, err, "a second CPU profile while one runs")
	require.NoError(t, stop())
	require.NoError(t, stop(), "stopping again does nothing")
	fi, err := os.Stat(path)
	require.NoError(t, err)
	require.Positive(t, fi.Size(), "the profile is written when it stops")

	_, err = StartCPUProfile(filepath.Join(t.TempDir(), "missing", "cpu.prof"))
	require.Error(t, err)
}
