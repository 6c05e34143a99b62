// Package logsafe bounds what a peer supplies before it reaches a log line
// or an error message. Anything a remote client chooses — a claimed zone
// name, a token's key id or algorithm — passes through Peer, so that one
// request can add at most a few hundred bytes to global's log however large
// the value it sent, and cannot forge log lines with control characters.
package logsafe

import (
	"strconv"
	"unicode/utf8"
)

// MaxPeerValue is how many bytes of a peer-supplied value Peer keeps.
const MaxPeerValue = 64

// Peer returns v fit for a log line or an error message: unchanged when it
// is at most MaxPeerValue bytes of printable ASCII without spaces, quotes or
// backslashes (a zone name, a key id); otherwise its first MaxPeerValue
// bytes (cut at a character boundary) as a quoted Go string, followed by
// how many bytes were left out. The empty string stays empty.
func Peer(v string) string {
	if len(v) <= MaxPeerValue && plain(v) {
		return v
	}
	cut := v
	if len(cut) > MaxPeerValue {
		cut = cut[:MaxPeerValue]
		for len(cut) > 0 && !utf8.ValidString(cut) {
			cut = cut[:len(cut)-1]
		}
	}
	out := strconv.QuoteToASCII(cut)
	if n := len(v) - len(cut); n > 0 {
		out += "…(" + strconv.Itoa(n) + " more bytes)"
	}
	return out
}

func plain(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c <= ' ' || c > '~' || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}
