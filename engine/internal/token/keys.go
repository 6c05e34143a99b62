package token

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/kds-engine/kds-engine/engine/internal/trustfile"
)

const (
	pemPrivateKey = "PRIVATE KEY"
	pemPublicKey  = "PUBLIC KEY"

	// maxKeyFileSize bounds a signing key or verification key file.
	maxKeyFileSize = 1 << 20
	// whatKeyFile names a verification key file in errors.
	whatKeyFile = "verification key file"
)

// LoadOrCreateSigningKey returns the Ed25519 signing key stored at path as a
// PEM-encoded PKCS#8 "PRIVATE KEY". When the file does not exist it generates
// a key and writes it with mode 0600 (creating missing directories with mode
// 0700); created reports whether that happened. An existing file must not be
// readable or writable by group or others: such a file is refused with an
// error naming the file, its mode and the chmod that fixes it, because anyone
// who can read the signing key can mint tokens for every zone.
//
// Creation is safe against a concurrent creator: the key is written to a
// temporary file and linked into place, so exactly one key wins and both
// callers end up using it.
func LoadOrCreateSigningKey(path string) (key ed25519.PrivateKey, created bool, err error) {
	key, err = LoadSigningKey(path)
	if err == nil {
		return key, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, err
	}
	if err := createSigningKey(path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			// Somebody else created it between our load and our link.
			key, err = LoadSigningKey(path)
			return key, false, err
		}
		return nil, false, err
	}
	key, err = LoadSigningKey(path)
	if err != nil {
		return nil, false, err
	}
	return key, true, nil
}

func createSigningKey(path string) error {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return fmt.Errorf("generate signing key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return fmt.Errorf("encode signing key: %w", err)
	}
	if err := createFile(path, pem.EncodeToMemory(&pem.Block{Type: pemPrivateKey, Bytes: der})); err != nil {
		return fmt.Errorf("create signing key file %s: %w", path, err)
	}
	return nil
}

// LoadSigningKey reads the Ed25519 signing key at path (PEM PKCS#8 "PRIVATE
// KEY"). The file must exist and pass trustfile's rule for secrets: owned
// by root or the engine's user, not accessible by group or others (an
// error wrapping trustfile.ErrUnsafe names the file, its mode or owner and
// the fix). A missing file yields an error matching fs.ErrNotExist.
func LoadSigningKey(path string) (ed25519.PrivateKey, error) {
	data, err := trustfile.ReadFile(path, trustfile.Secret, "signing key file", maxKeyFileSize)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != pemPrivateKey {
		return nil, fmt.Errorf("signing key file %s: no PEM %q block found", path, pemPrivateKey)
	}
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("signing key file %s: %w", path, err)
	}
	key, ok := parsed.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("signing key file %s: holds a %T, want an Ed25519 key", path, parsed)
	}
	return key, nil
}

// WritePublicKey writes pub to path as a PEM PKIX "PUBLIC KEY" with mode
// 0644, replacing an existing file. Public keys are not secret; verifiers
// load them with LoadVerificationKeys.
func WritePublicKey(path string, pub ed25519.PublicKey) error {
	if len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("write public key %s: key has %d bytes, want %d", path, len(pub), ed25519.PublicKeySize)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return fmt.Errorf("encode public key: %w", err)
	}
	data := pem.EncodeToMemory(&pem.Block{Type: pemPublicKey, Bytes: der})
	if err := os.WriteFile(path, data, 0o644); err != nil { //nolint:gosec // public key, world-readable on purpose
		return fmt.Errorf("write public key: %w", err)
	}
	return nil
}

// LoadVerificationKeys reads Ed25519 public keys from the given files. Each
// file must pass trustfile's rule for public files (owned by root or the
// engine's user, not writable by group or others) and holds one or more
// PEM PKIX "PUBLIC KEY" blocks (as written by WritePublicKey). Several keys allow rotation: tokens signed by any of them
// verify. At least one key is required; errors name the file. The public half
// of the signing key is not added implicitly: callers that verify with the key
// they sign with pass it to NewVerifier themselves.
func LoadVerificationKeys(paths ...string) ([]ed25519.PublicKey, error) {
	if len(paths) == 0 {
		return nil, errors.New("load verification keys: no key files given")
	}
	var keys []ed25519.PublicKey
	for _, path := range paths {
		data, err := trustfile.ReadFile(path, trustfile.Public, whatKeyFile, maxKeyFileSize)
		if err != nil {
			return nil, err
		}
		found, err := ParsePublicKeys(data)
		if err != nil {
			return nil, fmt.Errorf("verification key file %s: %w", path, err)
		}
		keys = append(keys, found...)
	}
	return keys, nil
}

// ParsePublicKeys decodes every PEM block in data; each must be a PKIX
// "PUBLIC KEY" holding an Ed25519 key. Another block type (a private key
// included: it does not belong in a file that is shared), a key of another
// algorithm or no key at all is an error.
func ParsePublicKeys(data []byte) ([]ed25519.PublicKey, error) {
	var keys []ed25519.PublicKey
	for n := 1; ; n++ {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		switch block.Type {
		case pemPublicKey:
			parsed, err := x509.ParsePKIXPublicKey(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("PEM block %d: %w", n, err)
			}
			pub, ok := parsed.(ed25519.PublicKey)
			if !ok {
				return nil, fmt.Errorf("PEM block %d: holds a %T, want an Ed25519 key", n, parsed)
			}
			keys = append(keys, pub)
		default:
			return nil, fmt.Errorf("PEM block %d: type %q, want %q", n, block.Type, pemPublicKey)
		}
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("no PEM %q block found", pemPublicKey)
	}
	return keys, nil
}

// KeyID is the key id placed in a token's "kid" header: the first 8 bytes of
// the SHA-256 of the raw public key, hex encoded. It is stable for a key and
// lets a verifier with several keys pick the right one (and say which key a
// token names when it trusts none).
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}
