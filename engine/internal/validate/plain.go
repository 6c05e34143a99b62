package validate

import (
	"bytes"
	"encoding/binary"
	"unicode/utf8"
)

// plainScanner checks the specs of trusted types (WithTrustedPlugins) in one
// pass, without building the parsed tree the schema step needs: is the spec
// a JSON object, in valid UTF-8, with no object naming a member twice? It
// only ever answers yes for a spec the full check (parseSpec, the UTF-8 check
// and duplicateName) accepts; it answers no whenever it is not sure — a
// string with an escape, nesting deeper than plainMaxDepth, an object of more
// than plainMaxNames members, a blank spec or a top-level value other than an
// object — and then the full check decides and describes what is wrong.
// FuzzPlainSpec holds it to that. One scanner per goroutine: it keeps the
// names of the objects being scanned between calls to reuse their memory.
type plainScanner struct {
	names [][]byte
}

const (
	plainMaxDepth = 64
	plainMaxNames = 32
)

// plain reports whether spec is a plain JSON object as described above.
func (sc *plainScanner) plain(spec []byte) bool {
	sc.names = sc.names[:0]
	i := skipJSONSpace(spec, 0)
	if i >= len(spec) || spec[i] != '{' {
		return false
	}
	i, ok := sc.object(spec, i+1, 1)
	if !ok || skipJSONSpace(spec, i) != len(spec) {
		return false
	}
	return utf8.Valid(spec)
}

// value scans the value at b[i:] and returns the offset after it.
func (sc *plainScanner) value(b []byte, i, depth int) (int, bool) {
	if i >= len(b) {
		return i, false
	}
	switch c := b[i]; {
	case c == '{':
		return sc.object(b, i+1, depth+1)
	case c == '[':
		return sc.array(b, i+1, depth+1)
	case c == '"':
		_, j, ok := plainString(b, i+1)
		return j, ok
	case c == 't':
		return literal(b, i, "true")
	case c == 'f':
		return literal(b, i, "false")
	case c == 'n':
		return literal(b, i, "null")
	case c == '-' || '0' <= c && c <= '9':
		return number(b, i)
	}
	return i, false
}

// object scans the members of the object whose '{' is just before b[i].
func (sc *plainScanner) object(b []byte, i, depth int) (int, bool) {
	if depth > plainMaxDepth {
		return i, false
	}
	i = skipJSONSpace(b, i)
	if i < len(b) && b[i] == '}' {
		return i + 1, true
	}
	first := len(sc.names)
	for {
		i = skipJSONSpace(b, i)
		if i >= len(b) || b[i] != '"' {
			return i, false
		}
		name, j, ok := plainString(b, i+1)
		if !ok || len(sc.names)-first >= plainMaxNames {
			return j, false
		}
		for _, prev := range sc.names[first:] {
			if bytes.Equal(prev, name) {
				return j, false
			}
		}
		sc.names = append(sc.names, name)
		i = skipJSONSpace(b, j)
		if i >= len(b) || b[i] != ':' {
			return i, false
		}
		if i, ok = sc.value(b, skipJSONSpace(b, i+1), depth); !ok {
			return i, false
		}
		i = skipJSONSpace(b, i)
		switch {
		case i >= len(b):
			return i, false
		case b[i] == ',':
			i++
		case b[i] == '}':
			sc.names = sc.names[:first]
			return i + 1, true
		default:
			return i, false
		}
	}
}

// array scans the elements of the array whose '[' is just before b[i].
func (sc *plainScanner) array(b []byte, i, depth int) (int, bool) {
	if depth > plainMaxDepth {
		return i, false
	}
	i = skipJSONSpace(b, i)
	if i < len(b) && b[i] == ']' {
		return i + 1, true
	}
	for {
		var ok bool
		if i, ok = sc.value(b, skipJSONSpace(b, i), depth); !ok {
			return i, false
		}
		i = skipJSONSpace(b, i)
		switch {
		case i >= len(b):
			return i, false
		case b[i] == ',':
			i++
		case b[i] == ']':
			return i + 1, true
		default:
			return i, false
		}
	}
}

// plainString returns the content of the string whose opening quote is just
// before b[i], and the offset after its closing quote; ok is false for a
// string with an escape (left to the full check), a control character, or
// no closing quote.
func plainString(b []byte, i int) (content []byte, next int, ok bool) {
	n := bytes.IndexByte(b[i:], '"')
	if n < 0 {
		return nil, len(b), false
	}
	s := b[i : i+n]
	if bytes.IndexByte(s, '\\') >= 0 || hasControl(s) {
		return nil, i + n + 1, false
	}
	return s, i + n + 1, true
}

// hasControl reports whether s holds a byte below 0x20, 32 bytes at a
// time (four words tested together: one branch per 32 bytes), then eight.
func hasControl(s []byte) bool {
	const highs, limit = 0x8080808080808080, 0x20 * 0x0101010101010101
	for len(s) >= 32 {
		x0 := binary.LittleEndian.Uint64(s)
		x1 := binary.LittleEndian.Uint64(s[8:])
		x2 := binary.LittleEndian.Uint64(s[16:])
		x3 := binary.LittleEndian.Uint64(s[24:])
		if ((x0-limit)&^x0|(x1-limit)&^x1|(x2-limit)&^x2|(x3-limit)&^x3)&highs != 0 {
			return true
		}
		s = s[32:]
	}
	for len(s) >= 8 {
		x := binary.LittleEndian.Uint64(s)
		if (x-limit)&^x&highs != 0 {
			return true
		}
		s = s[8:]
	}
	for _, c := range s {
		if c < 0x20 {
			return true
		}
	}
	return false
}

// literal scans the literal word at b[i:].
func literal(b []byte, i int, word string) (int, bool) {
	if !bytes.HasPrefix(b[i:], []byte(word)) {
		return i, false
	}
	return i + len(word), true
}

// number scans the JSON number at b[i:]: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
func number(b []byte, i int) (int, bool) {
	if i < len(b) && b[i] == '-' {
		i++
	}
	start := i
	i = digits(b, i)
	switch {
	case i == start:
		return i, false
	case b[start] == '0' && i-start > 1:
		return i, false
	}
	if i < len(b) && b[i] == '.' {
		j := digits(b, i+1)
		if j == i+1 {
			return j, false
		}
		i = j
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := digits(b, i)
		if j == i {
			return j, false
		}
		i = j
	}
	return i, true
}

func digits(b []byte, i int) int {
	for i < len(b) && '0' <= b[i] && b[i] <= '9' {
		i++
	}
	return i
}

// skipJSONSpace returns the offset of the first byte at or after i that is
// not JSON whitespace.
func skipJSONSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\n' || b[i] == '\t' || b[i] == '\r') {
		i++
	}
	return i
}
