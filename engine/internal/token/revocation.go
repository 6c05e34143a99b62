package token

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/kds-engine/kds-engine/engine/internal/filewatch"
	"github.com/kds-engine/kds-engine/engine/internal/trustfile"
)

// RevocationList is the set of revoked token ids read from a file, which it
// reloads when the file changes: on Revoked, at most once per check
// interval, it stats the file and, when it changed, reads it again. A
// change that cannot be used (the file is gone, a line is not a token id,
// or the file fails trustfile's rule: owned by another user, writable by
// group or others) keeps the previous list; that change is logged once as a warning and
// the file is tried again when it next changes. The file holds one token id
// per line (as `kds-engine token generate` prints it); blank lines and
// everything after a '#' are ignored. It is safe for concurrent use.
type RevocationList struct {
	file string
	ids  *filewatch.Watched[map[string]struct{}]
}

// RevocationOption configures a RevocationList.
type RevocationOption func(*revocationOptions)

type revocationOptions struct {
	interval time.Duration
	now      func() time.Time
	changed  func(ids []string)
}

// WithRevocationCheckInterval sets how often, at most, Revoked looks at
// the file again (default DefaultKeyCheckInterval). Zero or less looks on
// every call.
func WithRevocationCheckInterval(d time.Duration) RevocationOption {
	return func(o *revocationOptions) { o.interval = d }
}

// WithRevocationClock sets the clock of the check interval; for tests.
func WithRevocationClock(now func() time.Time) RevocationOption {
	return func(o *revocationOptions) { o.now = now }
}

// WithOnRevocationChange sets a function called, from the Revoked call that
// saw the change, with the sorted ids of each list reloaded after the first
// load: the place to end the sessions of newly revoked tokens. It runs while
// the list is locked and must not call the list.
func WithOnRevocationChange(changed func(ids []string)) RevocationOption {
	return func(o *revocationOptions) { o.changed = changed }
}

// NewRevocationList reads file and keeps it current. An unusable file is an
// error naming the file (and the line). log receives the reload messages
// (nil discards them).
func NewRevocationList(file string, log hclog.Logger, opts ...RevocationOption) (*RevocationList, error) {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	o := revocationOptions{interval: DefaultKeyCheckInterval, now: time.Now}
	for _, opt := range opts {
		opt(&o)
	}
	w, err := filewatch.New(filewatch.Config[map[string]struct{}]{
		Files: []string{file},
		Load:  func() (map[string]struct{}, error) { return loadRevocations(file) },
		Adopted: func(ids map[string]struct{}, reload bool) {
			msg, lvl := "loaded zone token revocation file", hclog.Debug
			if reload {
				msg, lvl = "reloaded zone token revocation file; listed tokens are refused and their sessions ended", hclog.Info
			}
			log.Log(lvl, msg, "file", file, "revoked", len(ids))
			if reload && o.changed != nil {
				o.changed(sortedIDs(ids))
			}
		},
		Rejected: func(err error) {
			log.Warn("zone token revocation file changed but cannot be used; still using the previous list, will try again when the file changes",
				"file", file, "error", err)
		},
		Interval: o.interval,
		Now:      o.now,
	})
	if err != nil {
		return nil, err
	}
	return &RevocationList{file: file, ids: w}, nil
}

// Revoked reports whether id is listed, looking at the file again first if
// the check interval has passed.
func (l *RevocationList) Revoked(id string) bool {
	_, ok := l.ids.Current()[id]
	return ok
}

// Refresh looks at the file again if the check interval has passed, so
// that a change is seen (and WithOnRevocationChange called) without a
// session starting; global calls it periodically.
func (l *RevocationList) Refresh() { l.ids.Current() }

// File is the revocation file's path.
func (l *RevocationList) File() string { return l.file }

func sortedIDs(ids map[string]struct{}) []string {
	out := make([]string, 0, len(ids))
	for id := range ids {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

// loadRevocations reads the token ids of file; an error names the file and
// the line.
func loadRevocations(file string) (map[string]struct{}, error) {
	data, err := trustfile.ReadFile(file, trustfile.Public, "revocation file", 0)
	if err != nil {
		return nil, err
	}
	ids, err := ParseRevocations(data)
	if err != nil {
		return nil, fmt.Errorf("revocation file %s:%w", file, err)
	}
	return ids, nil
}

// ParseRevocations parses the contents of a revocation file: one token id
// (32 hexadecimal digits, case-insensitive) per line, '#' starts a comment.
// An error starts with the line number ("3: ...").
func ParseRevocations(data []byte) (map[string]struct{}, error) {
	ids := map[string]struct{}{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line, _, _ := strings.Cut(sc.Text(), "#")
		id := strings.ToLower(strings.TrimSpace(line))
		if id == "" {
			continue
		}
		if len(id) != IDLength || !isHex(id) {
			return nil, fmt.Errorf("%d: %q is not a token id (%d hexadecimal digits, as kds-engine token generate prints it)", n, id, IDLength)
		}
		ids[id] = struct{}{}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read: %w", err)
	}
	return ids, nil
}

func isHex(s string) bool {
	_, err := hex.DecodeString(s)
	return err == nil
}
