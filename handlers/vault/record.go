package vault

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/wxhub/wxhub/wechat"
)

// Errors. Each matches with errors.Is; none carries a token.
var (
	// ErrNotFound: no record for this user (never stored, expired,
	// forgotten).
	ErrNotFound = errors.New("vault: no record for this user")
	// ErrUnknownKey: the record was encrypted under a key id that is not
	// in the keyring.
	ErrUnknownKey = errors.New("vault: record encrypted under a key that is not configured:")
	// ErrDecrypt: the key with the record's id did not decrypt it (wrong
	// key, or a record tampered with or moved under another user's key).
	ErrDecrypt = errors.New("vault: record does not decrypt")
	// ErrCorrupt: the stored value is not a vault envelope.
	ErrCorrupt = errors.New("vault: corrupt record")
	// ErrRefreshExpired: the record's refresh_token has expired by our
	// clock; the user must authorize again.
	ErrRefreshExpired = errors.New("vault: refresh_token expired")
)

const envelopeVersion = 1

// Envelope is the stored form of a record: the key id in clear, the rest
// sealed. []byte fields are base64 in JSON.
type Envelope struct {
	V          int    `json:"v"`
	KeyID      string `json:"kid"`
	Nonce      []byte `json:"nonce"`
	Ciphertext []byte `json:"ct"`
}

// Tokens are a user's OAuth credentials and what belongs with them. Only
// AccessToken and RefreshToken are secret; LogValue leaves them out.
type Tokens struct {
	AccessToken      string    `json:"access_token"`
	RefreshToken     string    `json:"refresh_token"`
	Scope            string    `json:"scope"`
	UnionID          string    `json:"unionid,omitempty"`
	IsSnapshotUser   int       `json:"is_snapshotuser,omitempty"`
	AccessExpiresAt  time.Time `json:"access_expires_at"`
	RefreshExpiresAt time.Time `json:"refresh_expires_at"`
	StoredAt         time.Time `json:"stored_at"`
	// RefreshedFrom is the KV revision of the record that the refresh
	// which stored these tokens replaced; 0 after a login. Rotate keeps
	// it, so it tells a refresh from a re-encryption, which only the
	// revision changes (see FreshRequest.RejectedRevision).
	RefreshedFrom uint64 `json:"refreshed_from,omitempty"`
}

// refreshedSince reports whether t were stored by a refresh of the
// record at revision rev or of a later one.
func (t Tokens) refreshedSince(rev uint64) bool { return t.RefreshedFrom >= rev }

// LogValue keeps the tokens out of logs.
func (t Tokens) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("access_token_fp", wechat.Fingerprint(t.AccessToken)),
		slog.String("scope", t.Scope),
		slog.Time("access_expires_at", t.AccessExpiresAt),
		slog.Time("refresh_expires_at", t.RefreshExpiresAt),
	)
}

// String keeps the tokens out of %v and %s too.
func (t Tokens) String() string {
	return fmt.Sprintf("vault.Tokens{access_token_fp:%s scope:%s access_expires_at:%s refresh_expires_at:%s}",
		wechat.Fingerprint(t.AccessToken), t.Scope, t.AccessExpiresAt.Format(time.RFC3339), t.RefreshExpiresAt.Format(time.RFC3339))
}

// GoString is String for %#v.
func (t Tokens) GoString() string { return t.String() }

// AccessValid reports whether the access_token has more than margin left
// at now.
func (t Tokens) AccessValid(now time.Time, margin time.Duration) bool {
	return t.AccessToken != "" && t.AccessExpiresAt.Sub(now) > margin
}

// RefreshValid reports whether the refresh_token has not expired at now.
func (t Tokens) RefreshValid(now time.Time) bool {
	return t.RefreshToken != "" && now.Before(t.RefreshExpiresAt)
}

// FromExchange builds the Tokens of a successful code exchange or refresh
// answered at now. refreshTTL is the refresh_token's life (30 days for web
// apps) counted from now; for a refresh, pass the previous Tokens as prev:
// WeChat does not extend a refresh_token, so an unchanged one keeps its
// expiry.
func FromExchange(tok wechat.OAuthToken, now time.Time, refreshTTL time.Duration, prev *Tokens) Tokens {
	t := Tokens{
		AccessToken:      tok.AccessToken,
		RefreshToken:     tok.RefreshToken,
		Scope:            tok.Scope,
		UnionID:          tok.UnionID,
		IsSnapshotUser:   tok.IsSnapshotUser,
		AccessExpiresAt:  now.Add(tok.ExpiresIn).UTC(),
		RefreshExpiresAt: now.Add(refreshTTL).UTC(),
		StoredAt:         now.UTC(),
	}
	if tok.ExpiresIn <= 0 {
		t.AccessExpiresAt = now.Add(7200 * time.Second).UTC()
	}
	if prev != nil {
		if t.RefreshToken == "" || t.RefreshToken == prev.RefreshToken {
			t.RefreshToken, t.RefreshExpiresAt = prev.RefreshToken, prev.RefreshExpiresAt
		}
		if t.Scope == "" {
			t.Scope = prev.Scope
		}
		if t.UnionID == "" {
			t.UnionID = prev.UnionID
		}
		if t.IsSnapshotUser == 0 {
			t.IsSnapshotUser = prev.IsSnapshotUser
		}
	}
	return t
}

// Record is a user's decrypted vault record.
type Record struct {
	AppID    string
	OpenID   string
	Tokens   Tokens
	KeyID    string // the key it was encrypted under
	Revision uint64 // KV revision
}

// LogValue keeps the tokens out of logs.
func (r Record) LogValue() slog.Value {
	return slog.GroupValue(slog.String("appid", r.AppID), slog.String("openid", r.OpenID),
		slog.String("kid", r.KeyID), slog.Uint64("revision", r.Revision), slog.Any("tokens", r.Tokens))
}

// additionalData binds a sealed record to its user.
func additionalData(appid, openid string) []byte {
	return []byte("wx_vault/v1/" + appid + "/" + openid)
}

func (r *Keyring) sealTokens(appid, openid string, t Tokens) ([]byte, string, error) {
	pt, err := json.Marshal(t)
	if err != nil {
		return nil, "", fmt.Errorf("vault: encode record: %w", err)
	}
	defer clear(pt)
	env, err := r.seal(pt, additionalData(appid, openid))
	if err != nil {
		return nil, "", err
	}
	b, err := json.Marshal(env)
	if err != nil {
		return nil, "", fmt.Errorf("vault: encode envelope: %w", err)
	}
	return b, env.KeyID, nil
}

func (r *Keyring) openTokens(appid, openid string, value []byte) (Tokens, string, error) {
	var env Envelope
	if err := json.Unmarshal(value, &env); err != nil {
		return Tokens{}, "", fmt.Errorf("%w: not an envelope", ErrCorrupt)
	}
	pt, err := r.open(env, additionalData(appid, openid))
	if err != nil {
		return Tokens{}, env.KeyID, err
	}
	defer clear(pt)
	var t Tokens
	if err := json.Unmarshal(pt, &t); err != nil {
		return Tokens{}, env.KeyID, fmt.Errorf("%w: sealed data is not a record", ErrCorrupt)
	}
	return t, env.KeyID, nil
}
