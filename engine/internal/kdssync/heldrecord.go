package kdssync

import (
	"maps"
	"slices"
)

// heldRecord is what a Client holds of one type, as wire name → version:
// what its store held when the session started, updated by every response
// as if it were applied.
//
// Servers send a type's resources in ascending wire-name order
// (compareWireNames), across responses too, so the names of an initial
// sync arrive sorted and after everything recorded before them. Such a
// name, which m does not hold, is appended to the sorted tail instead of
// inserted into m: a fresh sync of 100k names costs a slice append per
// name instead of a map insert and the map's growth from empty (decision
// 0037). Any other name goes to m. A name is in m or in the tail, never
// both; a removed tail name keeps its place with an empty version (no
// held version is empty: check refuses those).
type heldRecord struct {
	m    map[string]string
	tail []heldName // ascending names (compareWireNames), none of them in m
	n    int        // names held
}

// heldName is a name of the tail and its version ("" once removed).
type heldName struct{ name, version string }

// newHeldRecord returns a record of versions (which it keeps and changes).
func newHeldRecord(versions map[string]string) *heldRecord {
	if versions == nil {
		versions = map[string]string{}
	}
	return &heldRecord{m: versions, n: len(versions)}
}

// len returns how many names are held.
func (h *heldRecord) len() int { return h.n }

// tailIndex returns name's index in the tail and whether it is there
// (removed or not).
func (h *heldRecord) tailIndex(name string) (int, bool) {
	if len(h.tail) == 0 {
		return 0, false
	}
	if compareWireNames(h.tail[len(h.tail)-1].name, name) < 0 {
		return len(h.tail), false
	}
	return slices.BinarySearchFunc(h.tail, name, func(e heldName, name string) int { return compareWireNames(e.name, name) })
}

// get returns name's version and whether it is held.
func (h *heldRecord) get(name string) (string, bool) {
	if v, ok := h.m[name]; ok {
		return v, true
	}
	if i, ok := h.tailIndex(name); ok && h.tail[i].version != "" {
		return h.tail[i].version, true
	}
	return "", false
}

// set records name as held at version (not empty).
func (h *heldRecord) set(name, version string) {
	if len(h.m) > 0 {
		if _, ok := h.m[name]; ok {
			h.m[name] = version
			return
		}
	}
	i, ok := h.tailIndex(name)
	switch {
	case ok:
		if h.tail[i].version == "" {
			h.n++
		}
		h.tail[i].version = version
	case i == len(h.tail):
		if len(h.tail) == cap(h.tail) {
			// Doubling: append grows a large slice by a quarter, which
			// allocates and copies five times the final size in all.
			h.tail = slices.Grow(h.tail, max(len(h.tail), 256))
		}
		h.tail = append(h.tail, heldName{name, version})
		h.n++
	default:
		h.m[name] = version
		h.n++
	}
}

// remove records name as not held.
func (h *heldRecord) remove(name string) {
	if _, ok := h.m[name]; ok {
		delete(h.m, name)
		h.n--
		return
	}
	if i, ok := h.tailIndex(name); ok && h.tail[i].version != "" {
		h.tail[i].version = ""
		h.n--
	}
}

// each calls fn with every held name and its version, in no set order.
func (h *heldRecord) each(fn func(name, version string)) {
	for name, v := range h.m {
		fn(name, v)
	}
	for _, e := range h.tail {
		if e.version != "" {
			fn(e.name, e.version)
		}
	}
}

// all returns a new map of every held name's version.
func (h *heldRecord) all() map[string]string {
	out := maps.Clone(h.m)
	if out == nil {
		out = make(map[string]string, h.n)
	}
	for _, e := range h.tail {
		if e.version != "" {
			out[e.name] = e.version
		}
	}
	return out
}
