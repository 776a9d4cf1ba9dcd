package weblogin

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/time/rate"

	"github.com/wxhub/wxhub/internal/cas"
)

// DefaultStateTTL is how long a login state lives: the time a user has to
// come back from WeChat's consent page.
const DefaultStateTTL = 10 * time.Minute

// Errors of Take. Both mean "answer 400 and publish nothing".
var (
	// ErrStateUnknown: the nonce was never issued, was used already (a
	// replay or a reload of the callback), or the bucket expired it.
	ErrStateUnknown = errors.New("weblogin: state unknown, already used or expired")
	// ErrStateExpired: the nonce was issued more than the TTL ago. It is
	// consumed all the same.
	ErrStateExpired = errors.New("weblogin: state expired")
	// ErrBadNonce: not a nonce this package could have issued.
	ErrBadNonce = errors.New("weblogin: malformed state")
)

// validNonce is WeChat's state alphabet and length; our nonces are
// rand.Text (26 characters of base32), well inside it.
var validNonce = regexp.MustCompile(`^[a-zA-Z0-9]{1,128}$`)

// State is what /oauth/authorize remembers about one login, keyed by the
// nonce WeChat carries as its state parameter.
type State struct {
	AppID    string `json:"appid"`
	Scope    string `json:"scope"`
	ReturnTo string `json:"return_to"`
	State    string `json:"state,omitempty"` // the business's own state
	// Browser is the hex SHA-256 of the secret in the login cookie set
	// on the browser that started the login; the secret itself is only
	// in that cookie.
	Browser string `json:"browser,omitempty"`
	// JobID is the oauth.code.received job_id the callback will use:
	// random (crypto/rand), not derived from the nonce.
	JobID     string    `json:"job_id,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// StateStore keeps login states in a KV bucket (events.BucketLoginState).
// Each state is created under a fresh random nonce and taken exactly once:
// Take reads it and deletes it with a revision check, so of any number of
// concurrent callbacks with one nonce exactly one gets the state.
type StateStore struct {
	kv      jetstream.KeyValue
	ttl     time.Duration
	now     func() time.Time
	rereads *rate.Limiter // nonces not found at first that may be read again (notFoundRetries)
}

// rereadRate and rereadBurst bound the nonces per second, all callbacks
// together, that are read again when the bucket does not have them at
// first (see notFoundRetries). Only a callback that comes within moments
// of its login's start needs a second read, and logins start at most at
// DefaultAuthorizeRate; beyond the budget a nonce not found is unknown at
// once, so a flood of made-up nonces costs one read each, not four and
// 0.2 s each.
const (
	rereadRate  = 50
	rereadBurst = 100
)

// NewStateStore returns a store over kv. ttl <= 0 means DefaultStateTTL;
// now nil means time.Now. The bucket's own TTL should be the same, so that
// states nobody came back for disappear from storage too.
func NewStateStore(kv jetstream.KeyValue, ttl time.Duration, now func() time.Time) *StateStore {
	if ttl <= 0 {
		ttl = DefaultStateTTL
	}
	if now == nil {
		now = time.Now
	}
	return &StateStore{kv: kv, ttl: ttl, now: now, rereads: rate.NewLimiter(rereadRate, rereadBurst)}
}

// TTL returns how long a state lives.
func (s *StateStore) TTL() time.Duration { return s.ttl }

// Put stores st under a fresh nonce (crypto/rand, 130 bits) and returns
// the nonce. CreatedAt is set here.
func (s *StateStore) Put(ctx context.Context, st State) (string, error) {
	st.CreatedAt = s.now().UTC()
	b, err := json.Marshal(st)
	if err != nil {
		return "", fmt.Errorf("weblogin: encode state: %w", err)
	}
	for range 3 { // a collision of 130 random bits does not happen; be exact anyway
		nonce := rand.Text()
		_, err = s.kv.Create(ctx, nonce, b)
		if errors.Is(err, jetstream.ErrKeyExists) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("weblogin: store state: %w", err)
		}
		return nonce, nil
	}
	return "", fmt.Errorf("weblogin: store state: %w", err)
}

// Take consumes the state stored under nonce: it returns it once, and
// ErrStateUnknown to every later or concurrent caller. A state older than
// the TTL is consumed and reported as ErrStateExpired.
func (s *StateStore) Take(ctx context.Context, nonce string) (State, error) {
	return s.TakeIf(ctx, nonce, nil)
}

// TakeIf is Take with a check: when check (if not nil) refuses the
// stored state, TakeIf returns check's error and leaves the state in
// place, so that a request that may not have it (another browser) does
// not spend it for the one that may. An expired state is consumed and
// reported as ErrStateExpired before check is asked.
func (s *StateStore) TakeIf(ctx context.Context, nonce string, check func(State) error) (State, error) {
	if !validNonce.MatchString(nonce) {
		return State{}, ErrBadNonce
	}
	e, err := s.get(ctx, nonce)
	if err != nil {
		return State{}, err
	}
	var st State
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		return State{}, fmt.Errorf("weblogin: decode state: %w", err)
	}
	expired := s.now().Sub(st.CreatedAt) > s.ttl
	if !expired && check != nil {
		if err := check(st); err != nil {
			return State{}, err
		}
	}
	// Compare-and-delete: only the caller that read this revision can
	// delete it; everyone else finds a newer revision (the delete marker).
	if err := s.kv.Delete(ctx, nonce, jetstream.LastRevision(e.Revision())); err != nil {
		if cas.Lost(err) {
			return State{}, ErrStateUnknown
		}
		return State{}, fmt.Errorf("weblogin: consume state: %w", err)
	}
	if expired {
		return State{}, ErrStateExpired
	}
	return st, nil
}

// Restore puts back under nonce a state TakeIf returned, CreatedAt
// included (the TTL still counts from the login's start): for a callback
// whose job surely was not published, so that the same browser can
// reload the callback and its code, never exchanged, is used after all.
// It fails when the nonce holds a state again.
func (s *StateStore) Restore(ctx context.Context, nonce string, st State) error {
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("weblogin: encode state: %w", err)
	}
	if _, err := s.kv.Create(ctx, nonce, b); err != nil {
		return fmt.Errorf("weblogin: restore state: %w", err)
	}
	return nil
}

// notFoundRetries are the waits before get asks again for a nonce the
// bucket said it does not have (about 0.2 s in all).
//
// On a replicated bucket any replica answers a read (KV reads are direct
// gets, served by every replica that is nearly in sync), and one that
// lags a few milliseconds behind has not seen a state stored just now.
// The callback can come that soon: an snsapi_base login, or a user who
// authorized the app before, goes through WeChat's authorize redirect
// without a page. Asking again (each read may go to another replica)
// finds the state once the replica caught up; a nonce that was never
// issued or was used already costs only the wait (while the rereads
// budget lasts: rereadRate). A stale read the other way (a used state still seen) is harmless: the compare-and-delete in
// TakeIf refuses it.
var notFoundRetries = [...]time.Duration{10 * time.Millisecond, 40 * time.Millisecond, 150 * time.Millisecond}

// get reads nonce's entry; ErrStateUnknown when the bucket does not have
// it after notFoundRetries.
func (s *StateStore) get(ctx context.Context, nonce string) (jetstream.KeyValueEntry, error) {
	for i := 0; ; i++ {
		e, err := s.kv.Get(ctx, nonce)
		switch {
		case err == nil:
			return e, nil
		case !errors.Is(err, jetstream.ErrKeyNotFound):
			return nil, fmt.Errorf("weblogin: read state: %w", err)
		case i == len(notFoundRetries), i == 0 && !s.rereads.Allow():
			return nil, ErrStateUnknown
		}
		t := time.NewTimer(notFoundRetries[i])
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("weblogin: read state: %w", ctx.Err())
		}
	}
}
