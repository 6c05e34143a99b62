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

// TypeFromURL returns the type name in a type URL. The name must have the
// syntax of a registered type name (an upper-case letter, then at most 62
// letters and digits), so nothing a peer sends under another name reaches
// logs, insights or metrics.
func TypeFromURL(url string) (string, error) {
	typ, ok := strings.CutPrefix(url, TypeURLPrefix)
	if !ok {
		return "", fmt.Errorf("type URL %.100q does not start with %q", url, TypeURLPrefix)
	}
	if !resource.ValidTypeName(typ) {
		return "", fmt.Errorf("type URL %.100q: %.70q is not a type name (an upper-case letter, then at most 62 letters and digits)", url, typ)
	}
	return typ, nil
}

// canonicalName reports whether a wire name is in the one form WireName
// produces: "name", or "mesh/name" with neither part empty and no further
// '/'. Two different canonical names never map to the same store key.
func canonicalName(s string) bool {
	mesh, name := splitXDSName(s)
	return name != "" && strings.IndexByte(name, '/') < 0 && isWireName(s, mesh, name)
}

// isWireName reports whether s == WireName(mesh, name), without building
// the wire name.
func isWireName(s, mesh, name string) bool {
	if mesh == "" {
		return s == name
	}
	return len(s) == len(mesh)+1+len(name) && s[len(mesh)] == '/' && s[:len(mesh)] == mesh && s[len(mesh)+1:] == name
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
