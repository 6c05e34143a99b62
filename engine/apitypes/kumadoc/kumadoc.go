// Package kumadoc converts between Kuma's universal document form and the
// kds-engine resource envelope. The admin API (on every write) and the CLI
// (apply, and get --format kuma) use this one conversion, so both accept and
// print the same documents.
//
// Kuma writes the fields of its older, protobuf-defined types (Mesh,
// Dataplane, DataplaneInsight, ...) at the top level of the document:
//
//	type: Dataplane
//	mesh: default
//	name: web-1
//	networking: {address: 10.0.0.1, ...}
//
// and the fields of its newer policies under spec, which is already the
// envelope's shape. ToEnvelope moves top-level fields under spec;
// FromEnvelope moves them back for the types Kuma writes that way.
//
// The package depends only on the standard library.
package kumadoc

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
)

// envelopeKeys are the document keys that belong to the envelope, not to
// the spec.
var envelopeKeys = []string{"type", "mesh", "name", "labels", "spec", "version", "creationTime", "modificationTime", "zone"}

// TopLevelTypes are the types whose fields Kuma writes at the top level of
// a document. FromEnvelope prints these types that way.
var TopLevelTypes = []string{
	"Mesh", "Dataplane", "DataplaneInsight", "MeshInsight",
	"ZoneIngress", "ZoneIngressInsight", "ZoneEgress", "ZoneEgressInsight",
	"Zone", "ZoneInsight", "ExternalService", "MeshGateway", "MeshGatewayRoute",
	"TrafficPermission", "TrafficRoute", "TrafficLog", "TrafficTrace",
	"HealthCheck", "CircuitBreaker", "FaultInjection", "RateLimit", "Retry",
	"Timeout", "VirtualOutbound", "ProxyTemplate",
}

// IsTopLevelType reports whether Kuma writes typ's fields at the top level.
func IsTopLevelType(typ string) bool { return slices.Contains(TopLevelTypes, typ) }

// ErrMixedForm is returned for a document that has both a spec and fields
// outside the envelope.
var ErrMixedForm = errors.New("document mixes spec with top-level fields")

// ToEnvelope converts one JSON document in Kuma's universal form to the
// envelope form. A document that has a type, no spec and keys outside the
// envelope is in Kuma's top-level form: those keys move under spec, in the
// order they appear. Any other JSON object is returned unchanged (so the
// envelope form passes through); a value that is not an object is returned
// unchanged too, for the caller's decoder to refuse.
//
// A document with a spec and unknown top-level keys is refused with
// ErrMixedForm, naming the keys.
func ToEnvelope(doc []byte) ([]byte, error) {
	keys, vals, ok := members(doc)
	if !ok {
		return doc, nil
	}
	var extra []string
	hasType, hasSpec := false, false
	for _, k := range keys {
		switch {
		case k == "type":
			hasType = true
		case k == "spec":
			hasSpec = true
		case !slices.Contains(envelopeKeys, k):
			extra = append(extra, k)
		}
	}
	if !hasType || len(extra) == 0 {
		return doc, nil
	}
	if hasSpec {
		return nil, fmt.Errorf("%w: move %s under spec, or leave spec out (Kuma's top-level form)", ErrMixedForm, strings.Join(extra, ", "))
	}
	var out, spec bytes.Buffer
	out.WriteByte('{')
	spec.WriteByte('{')
	for i, k := range keys {
		dst := &out
		if !slices.Contains(envelopeKeys, k) {
			dst = &spec
		}
		if dst.Len() > 1 {
			dst.WriteByte(',')
		}
		kb, _ := json.Marshal(k)
		dst.Write(kb)
		dst.WriteByte(':')
		dst.Write(vals[i])
	}
	spec.WriteByte('}')
	if out.Len() > 1 {
		out.WriteByte(',')
	}
	out.WriteString(`"spec":`)
	out.Write(spec.Bytes())
	out.WriteByte('}')
	return out.Bytes(), nil
}

// ToEnvelopeBatch applies ToEnvelope to every element of the "resources"
// list of an API batch body; other bodies are returned unchanged.
func ToEnvelopeBatch(body []byte) ([]byte, error) {
	keys, vals, ok := members(body)
	if !ok {
		return body, nil
	}
	i := slices.Index(keys, "resources")
	if i < 0 {
		return body, nil
	}
	var items []json.RawMessage
	if json.Unmarshal(vals[i], &items) != nil {
		return body, nil
	}
	changed := false
	for j, it := range items {
		conv, err := ToEnvelope(it)
		if err != nil {
			return nil, fmt.Errorf("resources[%d]: %w", j, err)
		}
		if !bytes.Equal(conv, it) {
			items[j], changed = conv, true
		}
	}
	if !changed {
		return body, nil
	}
	list, err := json.Marshal(items)
	if err != nil {
		return nil, err
	}
	vals[i] = list
	return join(keys, vals), nil
}

// FromEnvelope converts one resource in the envelope form (as the API
// returns it) to what a Kuma user writes: the spec's fields move to the top
// level for TopLevelTypes, and the engine's own fields (version, zone) are
// left out, so applying the output again writes the same resource.
// creationTime and modificationTime stay, as Kuma prints them too.
func FromEnvelope(res []byte) ([]byte, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(res, &m); err != nil {
		return nil, fmt.Errorf("resource: %w", err)
	}
	delete(m, "version")
	delete(m, "zone")
	var typ string
	_ = json.Unmarshal(m["type"], &typ)
	if spec, ok := m["spec"]; ok && IsTopLevelType(typ) {
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(spec, &fields); err != nil {
			return nil, fmt.Errorf("%s spec: %w", typ, err)
		}
		for k, v := range fields {
			if slices.Contains(envelopeKeys, k) {
				return nil, fmt.Errorf("%s spec field %q collides with an envelope field; print it with the envelope form", typ, k)
			}
			m[k] = v
		}
		delete(m, "spec")
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		return keyRank(keys[i]) < keyRank(keys[j]) || keyRank(keys[i]) == keyRank(keys[j]) && keys[i] < keys[j]
	})
	vals := make([]json.RawMessage, len(keys))
	for i, k := range keys {
		vals[i] = m[k]
	}
	return join(keys, vals), nil
}

// keyRank orders the envelope keys first, as Kuma prints them.
func keyRank(k string) int {
	if i := slices.Index(envelopeKeys, k); i >= 0 {
		return i
	}
	return len(envelopeKeys)
}

// members returns the keys and raw values of a JSON object in document
// order; ok is false when doc is not a JSON object.
func members(doc []byte) (keys []string, vals []json.RawMessage, ok bool) {
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	t, err := dec.Token()
	if err != nil || t != json.Delim('{') {
		return nil, nil, false
	}
	for dec.More() {
		kt, err := dec.Token()
		if err != nil {
			return nil, nil, false
		}
		k, _ := kt.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, nil, false
		}
		keys, vals = append(keys, k), append(vals, v)
	}
	if _, err := dec.Token(); err != nil {
		return nil, nil, false
	}
	if _, err := dec.Token(); err == nil {
		return nil, nil, false // data after the object: leave it to the caller's decoder
	}
	return keys, vals, true
}

func join(keys []string, vals []json.RawMessage) []byte {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		kb, _ := json.Marshal(k)
		b.Write(kb)
		b.WriteByte(':')
		b.Write(vals[i])
	}
	b.WriteByte('}')
	return b.Bytes()
}
