package vault

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
)

// KeySize is the size of a vault key in bytes (AES-256).
const KeySize = 32

// ErrNoKeys: a keyring without any key.
var ErrNoKeys = errors.New("vault: no keys configured")

var keyIDRe = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)

// key is one AES-256-GCM key and its id.
type key struct {
	id   string
	aead cipher.AEAD
}

// Keyring is an ordered set of keys: the last one encrypts, all decrypt.
// It is safe for concurrent use. The key bytes never leave it.
type Keyring struct {
	keys []key
	byID map[string]int
}

// ParseKeyring reads a keyring from text: one key per line (or separated
// by ';', handy in an environment variable), each "<id>:<base64 of 32
// bytes>", oldest first; the LAST key is the newest and encrypts. Blank
// lines and lines starting with '#' are ignored. An id is 1 to 32 letters,
// digits, '_' or '-'. Errors name the line, never the key material.
func ParseKeyring(text string) (*Keyring, error) {
	r := &Keyring{byID: map[string]int{}}
	lines := strings.FieldsFunc(text, func(c rune) bool { return c == '\n' || c == ';' })
	for n, line := range lines {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		id, b64, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("vault: keyring entry %d: want <id>:<base64 key>", n+1)
		}
		id = strings.TrimSpace(id)
		if !keyIDRe.MatchString(id) {
			return nil, fmt.Errorf("vault: keyring entry %d: key id must be 1-32 letters, digits, _ or -", n+1)
		}
		if _, dup := r.byID[id]; dup {
			return nil, fmt.Errorf("vault: keyring entry %d: key id %q appears twice", n+1, id)
		}
		raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(b64))
		if err != nil {
			clear(raw) // what was decoded before the bad byte
			return nil, fmt.Errorf("vault: key %q: not base64", id)
		}
		aead, err := newAEAD(raw)
		if err != nil {
			return nil, fmt.Errorf("vault: key %q: %w", id, err)
		}
		r.byID[id] = len(r.keys)
		r.keys = append(r.keys, key{id: id, aead: aead})
	}
	if len(r.keys) == 0 {
		return nil, ErrNoKeys
	}
	return r, nil
}

// ReadKeyringFile is ParseKeyring on the contents of a file.
func ReadKeyringFile(path string) (*Keyring, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("vault: keyring file: %w", err)
	}
	defer clear(b)
	r, err := ParseKeyring(string(b))
	if err != nil {
		return nil, fmt.Errorf("%w (in %s)", err, path)
	}
	return r, nil
}

// newAEAD returns the AES-256-GCM cipher of raw and zeroes raw, also when
// it is not a key (not KeySize bytes): the key bytes live on only in the
// cipher's own expanded copy (see the package doc).
func newAEAD(raw []byte) (cipher.AEAD, error) {
	defer clear(raw)
	if len(raw) != KeySize {
		return nil, fmt.Errorf("%d bytes, want %d (AES-256)", len(raw), KeySize)
	}
	block, err := aes.NewCipher(raw)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// NewKeyLine returns a new random key as a keyring line "<id>:<base64>".
func NewKeyLine(id string) (string, error) {
	if !keyIDRe.MatchString(id) {
		return "", fmt.Errorf("vault: key id %q: want 1-32 letters, digits, _ or -", id)
	}
	raw := make([]byte, KeySize)
	if _, err := rand.Read(raw); err != nil {
		return "", fmt.Errorf("vault: random key: %w", err)
	}
	defer clear(raw)
	return id + ":" + base64.StdEncoding.EncodeToString(raw), nil
}

// Current returns the id of the key that encrypts (the newest).
func (r *Keyring) Current() string { return r.keys[len(r.keys)-1].id }

// IDs returns the key ids, oldest first.
func (r *Keyring) IDs() []string {
	out := make([]string, len(r.keys))
	for i, k := range r.keys {
		out[i] = k.id
	}
	return out
}

// Has reports whether the ring holds a key with this id.
func (r *Keyring) Has(id string) bool {
	_, ok := r.byID[id]
	return ok
}

// seal encrypts plaintext under the newest key, binding it to ad.
func (r *Keyring) seal(plaintext, ad []byte) (Envelope, error) {
	k := r.keys[len(r.keys)-1]
	return sealWith(k, plaintext, ad)
}

func sealWith(k key, plaintext, ad []byte) (Envelope, error) {
	nonce := make([]byte, k.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return Envelope{}, fmt.Errorf("vault: nonce: %w", err)
	}
	return Envelope{V: envelopeVersion, KeyID: k.id, Nonce: nonce, Ciphertext: k.aead.Seal(nil, nonce, plaintext, ad)}, nil
}

// open decrypts an envelope with the key it names.
func (r *Keyring) open(e Envelope, ad []byte) ([]byte, error) {
	if e.V != envelopeVersion {
		return nil, fmt.Errorf("%w: envelope version %d", ErrCorrupt, e.V)
	}
	i, ok := r.byID[e.KeyID]
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownKey, e.KeyID)
	}
	k := r.keys[i]
	if len(e.Nonce) != k.aead.NonceSize() {
		return nil, fmt.Errorf("%w: nonce size %d", ErrCorrupt, len(e.Nonce))
	}
	pt, err := k.aead.Open(nil, e.Nonce, e.Ciphertext, ad)
	if err != nil {
		return nil, fmt.Errorf("%w (key %q)", ErrDecrypt, e.KeyID)
	}
	return pt, nil
}
