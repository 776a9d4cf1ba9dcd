package vault

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/broker"
	"github.com/wxhub/wxhub/internal/cas"
)

// Errors of Open: a keyring that does not fit the bucket.
var (
	// ErrWrongKey: a configured key does not decrypt its own check record.
	ErrWrongKey = errors.New("vault: wrong key")
	// ErrMissingKey: the bucket holds records under a key id the keyring
	// does not have.
	ErrMissingKey = errors.New("vault: missing key")
	// ErrBadUser: appid or openid is not of the form the schemas allow.
	ErrBadUser = errors.New("vault: appid and openid must be 1-64 letters, digits, _ or -")
)

// Key prefixes in the bucket.
const (
	userPrefix  = "u."
	lockPrefix  = "l."
	checkPrefix = "k."
	checkText   = "wxhub vault key check"
)

var userIDRe = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// Vault is the encrypted token store on a KV bucket. It is safe for
// concurrent use.
type Vault struct {
	js   jetstream.JetStream
	kv   jetstream.KeyValue
	ring *Keyring
	opts Options
	// api is js's API prefix, stream the bucket's stream name: the vault
	// reads through the stream's leader (read.go).
	api, stream string
}

// Open binds a Vault to the bucket (it must exist: provisioning creates
// it) and checks the keyring against it (see the package doc): a wrong
// key is ErrWrongKey, a key the bucket needs but the ring lacks is
// ErrMissingKey. On success the newest key's check record exists.
func Open(ctx context.Context, js jetstream.JetStream, ring *Keyring, opts Options) (*Vault, error) {
	if ring == nil || len(ring.keys) == 0 {
		return nil, ErrNoKeys
	}
	opts.setDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	kv, err := js.KeyValue(ctx, opts.Bucket)
	if err != nil {
		return nil, fmt.Errorf("vault: bucket %s: %w", opts.Bucket, err)
	}
	stream := "KV_" + opts.Bucket
	// The handles say "nats: " once in the errors of refused writes.
	v := &Vault{js: broker.NATSOnceJetStream(js), kv: broker.NATSOnceKeyValue(kv), ring: ring, opts: opts, api: apiPrefix(js), stream: stream}
	if err := v.checkKeys(ctx); err != nil {
		return nil, err
	}
	return v, nil
}

// RefreshTimeout is the longest a refresh may take (Options.RefreshTimeout
// or its default): a FreshRequest's Refresh that fits in it is never cut.
func (v *Vault) RefreshTimeout() time.Duration { return v.opts.RefreshTimeout }

// LockTTL is the life of a refresh lock (Options.LockTTL or the one
// derived from RefreshTimeout).
func (v *Vault) LockTTL() time.Duration { return v.opts.LockTTL }

// Now is the vault's clock (Options.Now): token expiries are on it.
func (v *Vault) Now() time.Time { return v.opts.Now() }

// Keyring returns the vault's keyring.
func (v *Vault) Keyring() *Keyring { return v.ring }

func userKey(appid, openid string) string { return userPrefix + appid + "." + openid }
func lockKey(appid, openid string) string { return lockPrefix + appid + "." + openid }

func checkUser(appid, openid string) error {
	if !userIDRe.MatchString(appid) || !userIDRe.MatchString(openid) {
		return ErrBadUser
	}
	return nil
}

func checkAD(id string) []byte { return []byte("wx_vault/v1/keycheck/" + id) }

// checkKeys compares the ring with the bucket's check records.
func (v *Vault) checkKeys(ctx context.Context) error {
	stored, err := v.keys(ctx, checkPrefix+"*")
	if err != nil {
		return fmt.Errorf("vault: listing key check records: %w", err)
	}
	current := v.ring.Current()
	haveCurrent := false
	for _, k := range stored {
		id := k[len(checkPrefix):]
		if !v.ring.Has(id) {
			return fmt.Errorf("%w: bucket %s holds records encrypted under key %q, which is not in the keyring (add it; after `wxhub vault rotate` it may be removed)",
				ErrMissingKey, v.opts.Bucket, id)
		}
		if err := v.verifyCheck(ctx, id); err != nil {
			return err
		}
		haveCurrent = haveCurrent || id == current
	}
	if haveCurrent {
		return nil
	}
	return v.createCheck(ctx, current)
}

// createCheck writes the check record of key id, the ring's newest. Opens
// that start at once each find no check record and create one; all but
// one lose, and a loser checks the winner's record instead (it is under
// the same id, so the same key must decrypt it). A loser may be told while
// the winner's write is still being stored (a replicated bucket answers
// 10164 then), when not even the stream's leader has it: it waits for it.
func (v *Vault) createCheck(ctx context.Context, id string) error {
	env, err := v.ring.seal([]byte(checkText), checkAD(id))
	if err != nil {
		return err
	}
	b, err := marshalEnvelope(env)
	if err != nil {
		return err
	}
	v.opts.hooks.call(v.opts.hooks.beforeCheckCreate)
	_, err = v.create(ctx, checkPrefix+id, b)
	if err == nil {
		v.opts.Logger.Info("vault key check record written", "bucket", v.opts.Bucket, "kid", id)
		return nil
	}
	if !cas.Lost(err) {
		return fmt.Errorf("vault: writing the key check record for %q: %w", id, err)
	}
	value, err := v.await(ctx, checkPrefix+id)
	if err != nil {
		return fmt.Errorf("vault: reading the key check record for %q that another process wrote: %w", id, err)
	}
	return v.checkValue(id, value)
}

// verifyCheck reads key id's check record and checks it.
func (v *Vault) verifyCheck(ctx context.Context, id string) error {
	e, err := v.read(ctx, checkPrefix+id)
	if err != nil {
		return fmt.Errorf("vault: reading the key check record for %q: %w", id, err)
	}
	return v.checkValue(id, e.value)
}

// checkValue checks that value is key id's check record: ErrWrongKey if
// the key does not decrypt it.
func (v *Vault) checkValue(id string, value []byte) error {
	env, err := unmarshalEnvelope(value)
	if err == nil {
		if env.KeyID != id {
			err = fmt.Errorf("%w: check record names key %q", ErrCorrupt, env.KeyID)
		} else {
			var pt []byte
			pt, err = v.ring.open(env, checkAD(id))
			if err == nil && string(pt) != checkText {
				err = ErrCorrupt
			}
		}
	}
	if err != nil {
		return fmt.Errorf("%w: key %q does not decrypt its check record in bucket %s (is the key file the one these records were written with?): %w",
			ErrWrongKey, id, v.opts.Bucket, err)
	}
	return nil
}

// keys lists the bucket's keys matching filter.
func (v *Vault) keys(ctx context.Context, filter string) ([]string, error) {
	kl, err := v.kv.ListKeysFiltered(ctx, filter)
	if err != nil {
		return nil, err
	}
	defer kl.Stop()
	var out []string
	for k := range kl.Keys() {
		out = append(out, k)
	}
	return out, nil
}

// Get returns a user's record, or ErrNotFound.
func (v *Vault) Get(ctx context.Context, appid, openid string) (Record, error) {
	if err := checkUser(appid, openid); err != nil {
		return Record{}, err
	}
	e, err := v.read(ctx, userKey(appid, openid))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Record{}, ErrNotFound
	}
	if err != nil {
		return Record{}, fmt.Errorf("vault: get: %w", err)
	}
	t, kid, err := v.ring.openTokens(appid, openid, e.value)
	if err != nil {
		return Record{}, err
	}
	return Record{AppID: appid, OpenID: openid, Tokens: t, KeyID: kid, Revision: e.revision}, nil
}

// Store writes a user's tokens (replacing any record), encrypted under the
// newest key, with a TTL of the refresh_token's remaining life. Tokens
// whose refresh_token has already expired are not stored
// (ErrRefreshExpired).
func (v *Vault) Store(ctx context.Context, appid, openid string, t Tokens) (Record, error) {
	return v.store(ctx, appid, openid, t, nil)
}

// StoreIf is Store only if the record is still at revision rev (0: only
// if there is none); otherwise it fails with an error matching
// jetstream.ErrKeyRevisionMismatch.
func (v *Vault) StoreIf(ctx context.Context, appid, openid string, t Tokens, rev uint64) (Record, error) {
	return v.store(ctx, appid, openid, t, &rev)
}

func (v *Vault) store(ctx context.Context, appid, openid string, t Tokens, rev *uint64) (Record, error) {
	if err := checkUser(appid, openid); err != nil {
		return Record{}, err
	}
	ttl := t.RefreshExpiresAt.Sub(v.opts.Now())
	if ttl < time.Second || t.RefreshToken == "" {
		return Record{}, ErrRefreshExpired
	}
	ttl = ttl.Truncate(time.Second)
	b, kid, err := v.ring.sealTokens(appid, openid, t)
	if err != nil {
		return Record{}, err
	}
	popts := []jetstream.PublishOpt{jetstream.WithMsgTTL(ttl)}
	if rev != nil {
		popts = append(popts, jetstream.WithExpectLastSequencePerSubject(*rev))
	}
	msg := &nats.Msg{Subject: v.subject(userKey(appid, openid)), Data: b}
	ack, err := v.js.PublishMsg(ctx, msg, popts...)
	if err != nil {
		if cas.Lost(err) {
			return Record{}, fmt.Errorf("vault: store: %w", jetstream.ErrKeyRevisionMismatch)
		}
		return Record{}, fmt.Errorf("vault: store: %w", err)
	}
	return Record{AppID: appid, OpenID: openid, Tokens: t, KeyID: kid, Revision: ack.Sequence}, nil
}

// Forget deletes a user's record (all revisions), whatever revision it is
// at, and reports whether there was one: the operator's "forget this
// user". To delete a record found dead, use ForgetIf with the revision
// that was found dead.
func (v *Vault) Forget(ctx context.Context, appid, openid string) (existed bool, err error) {
	if err := checkUser(appid, openid); err != nil {
		return false, err
	}
	_, err = v.read(ctx, userKey(appid, openid))
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
	case err != nil:
		return false, fmt.Errorf("vault: forget: %w", err)
	default:
		existed = true
	}
	if err := v.kv.Purge(ctx, userKey(appid, openid), jetstream.PurgeTTL(time.Minute)); err != nil {
		return existed, fmt.Errorf("vault: forget: %w", err)
	}
	return existed, nil
}

// ForgetResult says what ForgetIf did.
type ForgetResult int

const (
	// Forgotten: the record was still at the revision and is deleted.
	Forgotten ForgetResult = iota + 1
	// ChangedMeanwhile: the record is no longer at the revision (a new
	// login or a refresh wrote it since, or it is gone already); nothing
	// was deleted.
	ChangedMeanwhile
)

func (r ForgetResult) String() string {
	switch r {
	case Forgotten:
		return "forgotten"
	case ChangedMeanwhile:
		return "changed meanwhile"
	}
	return fmt.Sprintf("ForgetResult(%d)", int(r))
}

// ForgetIf deletes a user's record (all revisions) only if it is still at
// revision rev, the one the caller read and found dead. A record written
// since (a new login while a refresh was refused) is kept: that is
// ChangedMeanwhile, not an error. rev must not be 0. Forget, in contrast,
// deletes whatever is there (the operator's `wxhub vault forget`).
func (v *Vault) ForgetIf(ctx context.Context, appid, openid string, rev uint64) (ForgetResult, error) {
	if err := checkUser(appid, openid); err != nil {
		return 0, err
	}
	if rev == 0 {
		return 0, errors.New("vault: forget: a revision is needed")
	}
	err := v.kv.Purge(ctx, userKey(appid, openid), jetstream.LastRevision(rev), jetstream.PurgeTTL(time.Minute))
	switch {
	case err == nil:
		return Forgotten, nil
	case cas.Lost(err):
		return ChangedMeanwhile, nil
	}
	return 0, fmt.Errorf("vault: forget: %w", err)
}

func marshalEnvelope(e Envelope) ([]byte, error) {
	b, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("vault: encode envelope: %w", err)
	}
	return b, nil
}

func unmarshalEnvelope(b []byte) (Envelope, error) {
	var e Envelope
	if err := json.Unmarshal(b, &e); err != nil {
		return Envelope{}, fmt.Errorf("%w: not an envelope", ErrCorrupt)
	}
	return e, nil
}
