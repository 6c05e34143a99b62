package kdssync

import (
	"fmt"
	"strings"

	"github.com/kds-engine/kds-engine/engine/internal/resource"
)

// TypeURLPrefix prefixes a type name to form its delta-xDS type URL.
const TypeURLPrefix = "kds-engine.io/v1/"

// resourceTypeURL is the type URL of the google.protobuf.Any that carries a
// kdsv1.Resource envelope on the wire.
const resourceTypeURL = "type.googleapis.com/kds.v1.Resource"

// TypeURL returns the delta-xDS type URL for a resource type name.
func TypeURL(typ string) string { return TypeURLPrefix + typ }

// TypeFromURL returns the type name in a type URL.
func TypeFromURL(url string) (string, error) {
	typ, ok := strings.CutPrefix(url, TypeURLPrefix)
	if !ok || typ == "" {
		return "", fmt.Errorf("type URL %q does not start with %q", url, TypeURLPrefix)
	}
	return typ, nil
}

// WireName is a resource's name within its type on the wire: "mesh/name" for
// mesh-scoped resources, "name" otherwise. Zone never appears: it follows
// from the connection.
func WireName(mesh, name string) string {
	if mesh == "" {
		return name
	}
	return mesh + "/" + name
}

// splitXDSName reverses WireName.
func splitXDSName(s string) (mesh, name string) {
	if m, n, ok := strings.Cut(s, "/"); ok {
		return m, n
	}
	return "", s
}

// keyFor is the store key of a wire name of type typ held for zone.
func keyFor(typ, zone, wireName string) resource.Key {
	mesh, name := splitXDSName(wireName)
	return resource.Key{Type: typ, Mesh: mesh, Zone: zone, Name: name}
}
