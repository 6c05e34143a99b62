package store

import (
	"crypto/rand"
	"encoding/base32"
	"strconv"
)

// epochEncoding renders an epoch in lowercase base32 without padding: 13
// characters for 64 bits, safe in URLs, file names and YAML.
var epochEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// Versioner renders the versions a store assigns to local writes (Create and
// Update) as "<epoch>-<counter>": epoch is 64 random bits chosen when the
// Versioner is made, counter is the store's write counter in decimal.
//
// A version must name one content of one resource for good: the sync layer
// resumes a session by comparing the versions a peer holds with its own and
// treats an equal version as unchanged content. A per-store counter alone
// repeats whenever it starts over: a memory store in every process, a bolt
// store whose data dir was lost, or one restored from an older copy of its
// file, whose counter goes back to what it was when the copy was taken.
// Those stores then hand out versions their peers already hold for other
// content, and the peers keep the stale content.
//
// The epoch is chosen per open, not stored in the file: a restored copy
// keeps its file (and the epoch it would have stored) but is opened again,
// so versions written after a restore carry a new epoch and can never
// collide with versions written after the copy was taken. Versions already
// in the file keep their meaning: each named exactly the content stored
// with it. Within one open the counter only grows, so one Versioner never
// renders the same version twice as long as its store's counter grows.
//
// Two opens draw the same epoch with probability 2⁻⁶⁴ per pair.
type Versioner struct {
	prefix string // epoch + "-"
}

// NewVersioner returns a Versioner with a fresh random epoch. Stores make
// one every time they are opened (or created, for stores without a file).
func NewVersioner() *Versioner {
	var b [8]byte
	// crypto/rand.Read never fails: on a broken system source the program
	// crashes rather than returning predictable bytes.
	_, _ = rand.Read(b[:])
	return &Versioner{prefix: epochEncoding.EncodeToString(b[:]) + "-"}
}

// Epoch returns the random part shared by every version this Versioner
// renders.
func (v *Versioner) Epoch() string { return v.prefix[:len(v.prefix)-1] }

// Version renders the version of the local write that took counter value n.
func (v *Versioner) Version(n uint64) string {
	return v.prefix + strconv.FormatUint(n, 10)
}
