package kumadoc

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestToEnvelope(t *testing.T) {
	cases := []struct {
		name, in, want string
	}{
		{"top-level form", `{"type":"Dataplane","mesh":"default","name":"web-1","networking":{"address":"10.0.0.1"},"probes":{"port":9000}}`,
			`{"type":"Dataplane","mesh":"default","name":"web-1","spec":{"networking":{"address":"10.0.0.1"},"probes":{"port":9000}}}`},
		{"envelope keys stay", `{"type":"Mesh","name":"default","labels":{"a":"b"},"creationTime":"2026-01-01T00:00:00Z","mtls":{}}`,
			`{"type":"Mesh","name":"default","labels":{"a":"b"},"creationTime":"2026-01-01T00:00:00Z","spec":{"mtls":{}}}`},
		{"envelope form unchanged", `{"type":"MeshTimeout","mesh":"default","name":"t","spec":{"to":[]}}`,
			`{"type":"MeshTimeout","mesh":"default","name":"t","spec":{"to":[]}}`},
		{"only envelope", `{"type":"Mesh","name":"default"}`, `{"type":"Mesh","name":"default"}`},
		{"no type: left to the decoder", `{"name":"x","networking":{}}`, `{"name":"x","networking":{}}`},
		{"not an object", `[1,2]`, `[1,2]`},
		{"numbers kept as written", `{"type":"Dataplane","name":"d","networking":{"inbound":[{"port":8080.0}]},"big":12345678901234567890}`,
			`{"type":"Dataplane","name":"d","spec":{"networking":{"inbound":[{"port":8080.0}]},"big":12345678901234567890}}`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := ToEnvelope([]byte(c.in))
			require.NoError(t, err)
			assert.Equal(t, c.want, string(got))
		})
	}
	_, err := ToEnvelope([]byte(`{"type":"Dataplane","name":"d","spec":{},"networking":{}}`))
	assert.True(t, errors.Is(err, ErrMixedForm))
	assert.ErrorContains(t, err, "networking")
}

func TestToEnvelopeBatch(t *testing.T) {
	got, err := ToEnvelopeBatch([]byte(`{"resources":[{"type":"Mesh","name":"default","mtls":{}},{"type":"MeshTimeout","mesh":"default","name":"t","spec":{}}]}`))
	require.NoError(t, err)
	assert.JSONEq(t, `{"resources":[{"type":"Mesh","name":"default","spec":{"mtls":{}}},{"type":"MeshTimeout","mesh":"default","name":"t","spec":{}}]}`, string(got))
	_, err = ToEnvelopeBatch([]byte(`{"resources":[{"type":"Mesh","name":"m","spec":{},"mtls":{}}]}`))
	assert.ErrorContains(t, err, "resources[0]")
	same := []byte(`{"other":1}`)
	got, err = ToEnvelopeBatch(same)
	require.NoError(t, err)
	assert.Equal(t, same, got)
}

func TestFromEnvelope(t *testing.T) {
	got, err := FromEnvelope([]byte(`{"type":"Dataplane","mesh":"default","name":"web-1","spec":{"networking":{"address":"10.0.0.1"}},"version":"v-1","zone":"zone-1","creationTime":"2026-01-01T00:00:00Z"}`))
	require.NoError(t, err)
	assert.Equal(t, `{"type":"Dataplane","mesh":"default","name":"web-1","creationTime":"2026-01-01T00:00:00Z","networking":{"address":"10.0.0.1"}}`, string(got))

	got, err = FromEnvelope([]byte(`{"type":"MeshTimeout","mesh":"default","name":"t","spec":{"to":[]},"version":"v-1"}`))
	require.NoError(t, err)
	assert.Equal(t, `{"type":"MeshTimeout","mesh":"default","name":"t","spec":{"to":[]}}`, string(got), "policies keep spec")

	_, err = FromEnvelope([]byte(`{"type":"Mesh","name":"m","spec":{"name":"clash"}}`))
	assert.ErrorContains(t, err, "collides")
}

// TestRoundTrip: a Kuma document converted to the envelope and back is the
// same document (keys in Kuma's order: envelope first).
func TestRoundTrip(t *testing.T) {
	for _, doc := range []string{
		`{"type":"Mesh","name":"default","mtls":{"enabledBackend":"ca-1"}}`,
		`{"type":"Dataplane","mesh":"default","name":"d","labels":{"a":"b"},"networking":{"address":"10.0.0.1"}}`,
		`{"type":"MeshRetry","mesh":"default","name":"r","spec":{"to":[]}}`,
	} {
		env, err := ToEnvelope([]byte(doc))
		require.NoError(t, err)
		back, err := FromEnvelope(env)
		require.NoError(t, err)
		assert.Equal(t, doc, string(back))
	}
}

// FuzzToEnvelope: whatever the input, ToEnvelope never panics; when it
// converts, the result is a JSON object with a spec, the input's envelope
// keys unchanged, and FromEnvelope turns it back into a valid object.
func FuzzToEnvelope(f *testing.F) {
	for _, s := range []string{
		`{"type":"Dataplane","name":"d","networking":{}}`,
		`{"type":"Mesh","name":"m","spec":{},"mtls":{}}`,
		`{"type":"x","type":"y","a":1}`,
		`{"type":"Mesh"} trailing`,
		`[]`, `"s"`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		out, err := ToEnvelope(in)
		if err != nil || bytes.Equal(out, in) {
			return
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(out, &m); err != nil {
			t.Fatalf("converted %q to invalid JSON %q: %v", in, out, err)
		}
		if _, ok := m["spec"]; !ok {
			t.Fatalf("converted %q without a spec: %q", in, out)
		}
		var orig map[string]json.RawMessage
		if json.Unmarshal(in, &orig) == nil {
			for _, k := range envelopeKeys {
				if k != "spec" && !bytes.Equal(orig[k], m[k]) {
					t.Fatalf("envelope key %s changed: %q -> %q", k, orig[k], m[k])
				}
			}
		}
		if back, err := FromEnvelope(out); err == nil && !json.Valid(back) {
			t.Fatalf("FromEnvelope(%q) = invalid JSON %q", out, back)
		}
	})
}
