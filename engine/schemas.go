package engine

import (
	"strings"

	"google.golang.org/grpc/metadata"

	"github.com/kds-engine/kds-engine/engine/internal/resource"
	"github.com/kds-engine/kds-engine/engine/internal/validate"
)

// schemaDigestKey is the session-header key under which global announces,
// for each type it serves that has a JSON Schema, "Type=digest" (hex
// SHA-256 of the schema document its plugin reported).
const schemaDigestKey = "kds-schema-digest"

// schemaDigests maps each type with a JSON Schema to its digest; computed
// once when the plugins are loaded.
func schemaDigests(types []resource.TypeDescriptor) map[string]string {
	out := make(map[string]string, len(types))
	for _, d := range types {
		if dg := validate.SchemaDigest(d); dg != "" {
			out[d.Name] = dg
		}
	}
	return out
}

// schemaHeader is the session header global sends every zone.
func (e *Engine) schemaHeader(string) metadata.MD {
	md := metadata.MD{}
	for _, name := range e.served {
		if dg, ok := e.digests[name]; ok {
			md.Append(schemaDigestKey, name+"="+dg)
		}
	}
	return md
}

// receiveValidator returns the validator a zone runs on what global sends,
// and the types it trusts global's schema check for: those whose schema
// global announced with the same digest as this zone's. Global enforced
// that very schema when the resource was written, so checking it again
// proves nothing; the envelope and this zone's plugins still validate
// every resource. Global never uses this: what a zone sends is checked in
// full (docs/decisions/0006-trusted-schemas.md).
func (e *Engine) receiveValidator(md metadata.MD) (*validate.Validator, []string) {
	announced := map[string]string{}
	for _, v := range md.Get(schemaDigestKey) {
		if name, dg, ok := strings.Cut(v, "="); ok {
			announced[name] = dg
		}
	}
	var same []string
	for _, name := range e.received {
		if dg, ok := e.digests[name]; ok && announced[name] == dg {
			same = append(same, name)
		}
	}
	if len(same) == 0 {
		return e.validator, nil
	}
	return e.validator.WithoutSchemas(same), same
}
