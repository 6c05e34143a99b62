package token

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/kds-engine/kds-engine/engine/internal/filewatch"
	"github.com/kds-engine/kds-engine/engine/internal/trustfile"
)

// DefaultKeyCheckInterval is how often, at most, a KeyFileVerifier looks at
// its key files again: on a verification, once this long has passed since
// the last look.
const DefaultKeyCheckInterval = time.Second

// KeyFileVerifier verifies zone tokens against the public half of the
// signing key and the keys in a set of verification key files, which it
// reloads when they change: on a verification, at most once per check
// interval, it stats the files and, when one changed, reads all of them
// again. A file that cannot be used keeps the previous keys; that change is
// logged once as a warning and the files are tried again when they next
// change. The signing key's public key is always trusted (with
// WithSigningKeyFile, that of the key the file holds now). It is safe for
// concurrent use.
type KeyFileVerifier struct {
	keys *filewatch.Watched[*Verifier]
}

// KeyFileOption configures a KeyFileVerifier.
type KeyFileOption func(*keyFileOptions)

type keyFileOptions struct {
	interval    time.Duration
	verifier    []VerifierOption
	signingFile string
}

// WithSigningKeyFile makes the trusted signing key the public half of the
// private key in path (see LoadSigningKey), watched and reloaded like the
// verification key files, instead of the fixed key given to
// NewKeyFileVerifier: replacing the file switches the signing key without a
// restart. The key given to NewKeyFileVerifier must be the file's current
// one.
func WithSigningKeyFile(path string) KeyFileOption {
	return func(o *keyFileOptions) { o.signingFile = path }
}

// WithKeyCheckInterval sets how often, at most, a verification looks at the
// key files again (default DefaultKeyCheckInterval). Zero or less looks on
// every verification.
func WithKeyCheckInterval(d time.Duration) KeyFileOption {
	return func(o *keyFileOptions) { o.interval = d }
}

// WithVerifierOptions passes opts to every Verifier built from the keys.
// WithClock also sets the clock of the check interval.
func WithVerifierOptions(opts ...VerifierOption) KeyFileOption {
	return func(o *keyFileOptions) { o.verifier = append(o.verifier, opts...) }
}

// NewKeyFileVerifier loads the keys of files (see LoadVerificationKeys) and
// returns a verifier trusting them and signing, the public half of the
// signing key, for tokens whose audience is audience (see NewVerifier).
// files may be empty: then only signing is trusted and nothing is watched.
// Every load, the first and each reload, checks the files with trustfile's
// rule (public files: not writable by group or others; the signing key:
// not accessible by them). log receives the reload messages (nil discards
// them).
func NewKeyFileVerifier(signing ed25519.PublicKey, audience string, files []string, log hclog.Logger, opts ...KeyFileOption) (*KeyFileVerifier, error) {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	o := keyFileOptions{interval: DefaultKeyCheckInterval}
	for _, opt := range opts {
		opt(&o)
	}
	probe := &Verifier{now: time.Now}
	for _, opt := range o.verifier {
		opt(probe)
	}
	files = append([]string(nil), files...)
	watched := files
	if o.signingFile != "" {
		watched = append([]string{o.signingFile}, files...)
	}
	w, err := filewatch.New(filewatch.Config[*Verifier]{
		Files: watched,
		// Load and Adopted run under the watcher's lock: signing is the key
		// of the verifier in use once Adopted has run.
		Load: func() (*Verifier, error) {
			sign := signing
			if o.signingFile != "" {
				key, err := LoadSigningKey(o.signingFile)
				if err != nil {
					return nil, &keyFileError{file: o.signingFile, err: err}
				}
				sign = key.Public().(ed25519.PublicKey)
			}
			keys, err := loadKeyFiles(files)
			if err != nil {
				return nil, err
			}
			v, err := NewVerifier(append([]ed25519.PublicKey{sign}, keys...), audience, o.verifier...)
			if err == nil {
				signing = sign
			}
			return v, err
		},
		Adopted: func(v *Verifier, reload bool) {
			if len(watched) == 0 {
				return
			}
			msg, lvl := "loaded zone token verification keys", hclog.Debug
			if reload {
				msg, lvl = "reloaded zone token verification keys; new sessions are verified against them", hclog.Info
			}
			log.Log(lvl, msg, "files", watched, "key_ids", v.KeyIDs(), "signing_key_id", KeyID(signing))
		},
		Rejected: func(err error) {
			file := ""
			var fe *keyFileError
			if errors.As(err, &fe) {
				file = fe.file
			}
			log.Warn("zone token verification key file changed but cannot be used; still trusting the previous keys, will try again when the files change",
				"file", file, "error", err)
		},
		Interval: o.interval,
		Now:      probe.now,
	})
	if err != nil {
		return nil, err
	}
	return &KeyFileVerifier{keys: w}, nil
}

// Verify checks tok against the keys trusted now; see Verifier.Verify.
func (v *KeyFileVerifier) Verify(tok, claimedZone string) (string, error) {
	return v.keys.Current().Verify(tok, claimedZone)
}

// VerifyToken checks tok against the keys trusted now; see
// Verifier.VerifyToken.
func (v *KeyFileVerifier) VerifyToken(tok, claimedZone string) (Verified, error) {
	return v.keys.Current().VerifyToken(tok, claimedZone)
}

// KeyIDs returns the ids of the keys trusted now, sorted.
func (v *KeyFileVerifier) KeyIDs() []string {
	return v.keys.Current().KeyIDs()
}

// keyFileError is a verification key file that cannot be used.
type keyFileError struct {
	file string
	err  error
}

func (e *keyFileError) Error() string { return e.err.Error() }

func (e *keyFileError) Unwrap() error { return e.err }

// loadKeyFiles reads the keys of every file; an error names the file.
func loadKeyFiles(files []string) ([]ed25519.PublicKey, error) {
	var keys []ed25519.PublicKey
	for _, f := range files {
		data, err := trustfile.ReadFile(f, trustfile.Public, whatKeyFile, maxKeyFileSize)
		if err != nil {
			return nil, &keyFileError{file: f, err: err}
		}
		found, err := ParsePublicKeys(data)
		if err != nil {
			return nil, &keyFileError{file: f, err: fmt.Errorf("verification key file %s: %w", f, err)}
		}
		keys = append(keys, found...)
	}
	return keys, nil
}
