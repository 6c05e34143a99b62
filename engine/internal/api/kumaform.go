package api

import (
	"github.com/kds-engine/kds-engine/engine/apitypes/kumadoc"
	"github.com/kds-engine/kds-engine/engine/internal/resource"
)

// kumaForm converts a write body into the envelope form before it is
// decoded into v: a resource (PUT) or each resource of a batch (validate,
// apply) may be written in Kuma's universal form, with the fields of Mesh,
// Dataplane and the other protobuf-defined Kuma types at the top level of
// the document. Other bodies pass through unchanged. See package kumadoc.
func kumaForm(v any, body []byte) ([]byte, error) {
	switch v.(type) {
	case *resource.Resource:
		return kumadoc.ToEnvelope(body)
	case *BatchRequest:
		return kumadoc.ToEnvelopeBatch(body)
	}
	return body, nil
}
