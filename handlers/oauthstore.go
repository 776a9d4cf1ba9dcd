package handlers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"time"
)

// OAuth record states.
const (
	OAuthClaimed   = "claimed"   // a worker is exchanging the code
	OAuthExchanged = "exchanged" // the code was exchanged; the result is not stored yet
	// OAuthUserInfoPending: exchanged, the user's tokens are in the vault,
	// and /sns/userinfo is to be tried again by a later delivery.
	OAuthUserInfoPending = "userinfo_pending"
	OAuthDone            = "done" // Result holds the terminal result
)

// OAuthRecord is what the wx_oauth bucket keeps about one code. It never
// holds the user's access_token or refresh_token.
type OAuthRecord struct {
	State     string    `json:"state"`
	ClaimedBy string    `json:"claimed_by,omitempty"`
	ClaimedAt time.Time `json:"claimed_at"`
	JobID     string    `json:"job_id,omitempty"` // the job that exchanged the code
	// JobState is the owner job's OAuth state parameter (its "state"
	// field; for web login the login's nonce): another job that names a
	// different state is another login, which never gets this outcome.
	JobState string `json:"job_state,omitempty"`
	// After the exchange: the identity WeChat returned.
	OpenID         string `json:"openid,omitempty"`
	Scope          string `json:"scope,omitempty"`
	UnionID        string `json:"unionid,omitempty"`
	IsSnapshotUser int    `json:"is_snapshotuser,omitempty"`
	// When done: the bare result subject (user.profile or
	// user.profile.failed) and the published payload.
	ResultSubject string          `json:"result_subject,omitempty"`
	Result        json.RawMessage `json:"result,omitempty"`
}

// Errors of an OAuthStore.
var (
	ErrOAuthNotFound = errors.New("oauth record not found")
	ErrOAuthExists   = errors.New("oauth record exists")
	ErrOAuthConflict = errors.New("oauth record changed meanwhile")
)

// OAuthStore keeps OAuthRecords by key with revisions (package worker
// implements it on the wx_oauth KV bucket).
type OAuthStore interface {
	// Get returns the record and its revision, or ErrOAuthNotFound.
	Get(ctx context.Context, key string) (OAuthRecord, uint64, error)
	// Create stores rec if key is absent, else ErrOAuthExists.
	Create(ctx context.Context, key string, rec OAuthRecord) (uint64, error)
	// Update replaces the record at revision rev, else ErrOAuthConflict.
	Update(ctx context.Context, key string, rec OAuthRecord, rev uint64) (uint64, error)
	// Delete removes the record at revision rev, else ErrOAuthConflict.
	Delete(ctx context.Context, key string, rev uint64) error
	// Wait blocks until the record at key is no longer at revision rev
	// (updated or deleted), or ctx is done. It watches; it never polls.
	Wait(ctx context.Context, key string, rev uint64) error
}

// OAuthKey is the wx_oauth key of a code: hex sha256(appid+code). The code
// itself is never a key (keys are visible to whoever lists the bucket).
func OAuthKey(appid, code string) string {
	sum := sha256.Sum256([]byte(appid + code))
	return hex.EncodeToString(sum[:])
}
