package plugin

import (
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kds-engine/kds-engine/engine/internal/resource"
	"github.com/kds-engine/kds-engine/engine/internal/testsupport/logbuf"
	pluginv1 "github.com/kds-engine/kds-engine/sdk/proto/plugin/v1"
)

func TestVerifyChecksumFormats(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "kds-plugin-x")
	require.NoError(t, os.WriteFile(bin, []byte("binary"), 0o755))
	// sha256sum of "binary"
	const sum = "9a3a45d01531a20e89ac6ae10b0b0beb0492acd7216a368aa062d1a5fecaf9cd"
	cases := map[string]string{
		"":                                "",
		sum + "  kds-plugin-x\n":          "",
		sum + " *kds-plugin-x\n":          "",
		sum + "\n":                        "",
		sum + "  /elsewhere/kds-plugin-x": "",
		sum + "  kds-plugin-y\n":          "names",
		strings.Repeat("0", 64) + "\n":    "checksum mismatch",
		"xyz\n":                           "not a sha256",
		"\n":                              "empty",
	}
	for content, want := range cases {
		t.Run(content, func(t *testing.T) {
			_ = os.Remove(bin + ChecksumSuffix)
			if content != "" {
				require.NoError(t, os.WriteFile(bin+ChecksumSuffix, []byte(content), 0o644))
			}
			err := verifyBinary(bin, nil)
			if want == "" {
				assert.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), want)
		})
	}
}

func TestBatchesBoundCountAndBytes(t *testing.T) {
	rs := make([]*resource.Resource, 10)
	idx := make([]int, 10)
	for i := range rs {
		rs[i] = &resource.Resource{Type: "T", Name: "n", Spec: make([]byte, 100)}
		idx[i] = i
	}
	assert.Equal(t, [][]int{{0, 1, 2, 3}, {4, 5, 6, 7}, {8, 9}}, batches(rs, idx, 4, 1<<20))
	assert.Equal(t, [][]int{{0, 1}, {2, 3}, {4, 5}, {6, 7}, {8, 9}}, batches(rs, idx, 100, 400))
	rs[3].Spec = make([]byte, 1000)
	assert.Equal(t, [][]int{{0, 1, 2}, {3}, {4, 5, 6}, {7, 8, 9}}, batches(rs, idx, 100, 600), "an oversized resource goes alone")
	assert.Empty(t, batches(rs, nil, 10, 10))
}

func TestLineWriterLogsWholeLines(t *testing.T) {
	var buf logbuf.Buffer
	w := lineLogger(hclog.New(&hclog.LoggerOptions{Name: "p", Output: &buf}), "stdout")
	_, _ = w.Write([]byte("hel"))
	assert.Empty(t, buf.String())
	_, _ = w.Write([]byte("lo\nsecond\r\nthi"))
	out := buf.String()
	assert.Contains(t, out, "p: hello: stream=stdout")
	assert.Contains(t, out, "p: second: stream=stdout")
	assert.NotContains(t, out, "thi")
}

func TestDescriptorFromProtoRefusesIncompleteTypes(t *testing.T) {
	ok := &pluginv1.TypeDescriptor{Name: "A", Direction: pluginv1.Direction_DIRECTION_ZONE_TO_GLOBAL, Scope: pluginv1.Scope_SCOPE_GLOBAL, JsonSchema: []byte(`{}`), SchemaVersion: 3, Description: "d"}
	d, err := descriptorFromProto("p", ok)
	require.NoError(t, err)
	assert.Equal(t, resource.TypeDescriptor{Name: "A", Direction: resource.ZoneToGlobal, Scope: resource.ScopeGlobal, Schema: []byte(`{}`), SchemaVersion: 3, Description: "d", Plugin: "p"}, d)

	for name, td := range map[string]*pluginv1.TypeDescriptor{
		"no name":      {Direction: pluginv1.Direction_DIRECTION_GLOBAL_TO_ZONE, Scope: pluginv1.Scope_SCOPE_MESH},
		"no direction": {Name: "A", Scope: pluginv1.Scope_SCOPE_MESH},
		"no scope":     {Name: "A", Direction: pluginv1.Direction_DIRECTION_GLOBAL_TO_ZONE},
	} {
		_, err := descriptorFromProto("p", td)
		assert.Error(t, err, name)
	}
}

func TestRegistryListsEveryDuplicate(t *testing.T) {
	_, err := NewRegistry(map[string][]resource.TypeDescriptor{
		"a": {{Name: "X", Plugin: "a"}, {Name: "Y", Plugin: "a"}},
		"b": {{Name: "X", Plugin: "b"}},
		"c": {{Name: "Y", Plugin: "c"}},
	})
	require.ErrorIs(t, err, ErrDuplicateType)
	assert.Contains(t, err.Error(), `type X is claimed by plugins "a" and "b"`)
	assert.Contains(t, err.Error(), `type Y is claimed by plugins "a" and "c"`)

	var empty *Registry
	_, ok := empty.Type("X")
	assert.False(t, ok)
	assert.Zero(t, empty.Len())
}

func TestParseLockFormats(t *testing.T) {
	a := strings.Repeat("ab", 32)
	b := strings.Repeat("CD", 32) // upper-case hex is accepted
	content := "# comment\n\n  # indented comment\n" +
		a + "  kds-plugin-a\n" + // sha256sum text mode
		b + " *kds-plugin-b\r\n" + // binary mode, CRLF
		strings.Repeat("01", 32) + "\tkds-plugin-c  \n" // a tab, trailing blanks
	lf, err := parseLock("/p/kds-plugins.lock", []byte(content))
	require.NoError(t, err)
	require.Len(t, lf.entries, 3)
	assert.Equal(t, 4, lf.entries["kds-plugin-a"].line)
	assert.Equal(t, 5, lf.entries["kds-plugin-b"].line)
	assert.Equal(t, strings.Repeat("cd", 32), hex.EncodeToString(lf.entries["kds-plugin-b"].sum))
	assert.Equal(t, 6, lf.entries["kds-plugin-c"].line)

	lf, err = parseLock("/p/kds-plugins.lock", nil)
	require.NoError(t, err, "an empty lock file is valid: it lists no binary")
	assert.Empty(t, lf.entries)

	// Every bad line is reported, not only the first.
	_, err = parseLock("/p/kds-plugins.lock", []byte("x  kds-plugin-a\n"+a+"  other\n"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "plugins lock file /p/kds-plugins.lock, line 1: ")
	assert.Contains(t, err.Error(), "plugins lock file /p/kds-plugins.lock, line 2: ")
}

// Full crash records and suspects make room for a new one (evicting one
// at random): once a zone had filled them, dropping the new one left a
// poisonous resource neither suspect nor recorded, so it made the plugin
// exit every time it was sent.
func TestFullCrashRecordsTakeANewOne(t *testing.T) {
	m := &managed{name: "p", log: hclog.NewNullLogger()}
	fpOf := func(i int) [32]byte {
		var fp [32]byte
		fp[0], fp[1], fp[2] = byte(i>>16), byte(i>>8), byte(i)
		fp[3] = 1
		return fp
	}
	for i := range maxSuspects {
		m.markSuspect(fpOf(i))
	}
	for i := range maxCrashRecords {
		m.recordCrash("bin", fpOf(maxSuspects+i), "old")
	}
	require.Len(t, m.suspects, maxSuspects)
	require.Len(t, m.crashes, maxCrashRecords)
	fresh := [32]byte{0xff}
	m.markSuspect(fresh)
	assert.True(t, m.isSuspect(fresh), "a new suspect is kept")
	assert.Len(t, m.suspects, maxSuspects)
	m.recordCrash("bin", fresh, "new")
	reason, ok := m.crashedOn("bin", fresh)
	assert.True(t, ok, "a new crash is recorded")
	assert.Equal(t, "new", reason)
	assert.Len(t, m.crashes, maxCrashRecords)
	m.recordCrash("bin", fresh, "again")
	assert.Len(t, m.crashes, maxCrashRecords, "a record made again evicts nothing")
}
