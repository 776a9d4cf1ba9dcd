package vault

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// RotateStats says what Rotate did.
type RotateStats struct {
	Records     int // user records seen
	Reencrypted int // re-encrypted under the newest key
	Current     int // already under the newest key
	Gone        int // deleted or expired while rotating
	Failed      int // could not be read (their key is missing or wrong)
	// Late: written under a key that Rotate retired, while it ran (by a
	// process not yet restarted with the new keyring), found when it
	// listed the records again after retiring, and re-encrypted (they
	// count in Reencrypted too).
	Late         int
	RetiredKeys  []string // check records removed: these keys may leave the ring
	CurrentKeyID string
}

// Rotate re-encrypts every record not under the newest key, keeping its
// TTL (the refresh_token's remaining life); a record changed meanwhile is
// read again. When every record is under the newest key, the check
// records of the other keys are removed, so those keys may then be taken
// out of the keyring. Run it after every process has the new keyring.
//
// A record written under an older key while Rotate re-encrypts (by a
// process still running with the old keyring) would be left under a
// retired key, which the next Open no longer knows it needs: so after
// retiring, Rotate lists the records again, from the stream's leader,
// and re-encrypts any still under a key other than the newest (Late).
//
// Only keys this ring holds and has superseded are retired. A check record
// of a key this ring does not know (a newer keyring in use elsewhere)
// makes Rotate refuse with ErrMissingKey naming that key, before it
// re-encrypts anything and again before it retires anything: such a
// check record is never removed.
func (v *Vault) Rotate(ctx context.Context) (RotateStats, error) {
	st := RotateStats{CurrentKeyID: v.ring.Current()}
	if _, err := v.retirable(ctx); err != nil {
		return st, err
	}
	keys, err := v.keys(ctx, userPrefix+">")
	if err != nil {
		return st, fmt.Errorf("vault: listing records: %w", err)
	}
	v.opts.hooks.call(v.opts.hooks.rotateListed)
	if err := v.rotateKeys(ctx, keys, &st); err != nil {
		return st, err
	}
	old, err := v.retirable(ctx)
	if err != nil {
		return st, err
	}
	for _, id := range old {
		if err := v.kv.Purge(ctx, checkPrefix+id, jetstream.PurgeTTL(time.Minute)); err != nil {
			return st, fmt.Errorf("vault: retiring key %q: %w", id, err)
		}
		st.RetiredKeys = append(st.RetiredKeys, id)
	}
	if len(old) == 0 {
		return st, nil
	}
	// Records written under a retired key meanwhile: list again, through
	// the leader (a listing a follower answers may miss the last writes).
	keys, err = v.list(ctx, userPrefix+">")
	if err != nil {
		return st, fmt.Errorf("vault: listing records again after retiring keys: %w", err)
	}
	var late RotateStats
	late.CurrentKeyID = st.CurrentKeyID
	err = v.rotateKeys(ctx, keys, &late)
	st.Late, st.Reencrypted, st.Failed = late.Reencrypted, st.Reencrypted+late.Reencrypted, st.Failed+late.Failed
	st.Records += late.Reencrypted + late.Failed
	if err != nil {
		return st, fmt.Errorf("%w (records written under a retired key while rotating: is a process still running with the old keyring?)", err)
	}
	if st.Late > 0 {
		v.opts.Logger.Warn("vault rotate: records were written under a retired key while rotating (a process still running with the old keyring?); re-encrypted them",
			"bucket", v.opts.Bucket, "records", st.Late)
	}
	return st, nil
}

// rotateKeys re-encrypts the records of keys (user record keys) under the
// newest key, counting in st.
func (v *Vault) rotateKeys(ctx context.Context, keys []string, st *RotateStats) error {
	var failures []error
	n := 0
	for _, k := range keys {
		appid, openid, ok := strings.Cut(strings.TrimPrefix(k, userPrefix), ".")
		if !ok {
			continue
		}
		st.Records++
		n++
		if err := v.rotateOne(ctx, appid, openid, st); err != nil {
			st.Failed++
			failures = append(failures, fmt.Errorf("%s: %w", k, err))
		}
	}
	if len(failures) > 0 {
		return fmt.Errorf("vault: rotate: %d of %d records not re-encrypted: %w", len(failures), n, errors.Join(failures...))
	}
	return nil
}

// retirable lists the key ids whose check records Rotate may remove: the
// ring's keys older than its newest. A check record of a key the ring
// does not have is ErrMissingKey.
func (v *Vault) retirable(ctx context.Context) ([]string, error) {
	checks, err := v.keys(ctx, checkPrefix+"*")
	if err != nil {
		return nil, fmt.Errorf("vault: listing key check records: %w", err)
	}
	stored := map[string]bool{}
	for _, k := range checks {
		id := k[len(checkPrefix):]
		if !v.ring.Has(id) {
			return nil, fmt.Errorf("%w: bucket %s has a check record for key %q, which this keyring does not have (a newer keyring is in use elsewhere?): run rotate with the newest keyring; nothing was retired",
				ErrMissingKey, v.opts.Bucket, id)
		}
		stored[id] = true
	}
	var old []string // oldest first
	for _, id := range v.ring.IDs() {
		if stored[id] && id != v.ring.Current() {
			old = append(old, id)
		}
	}
	return old, nil
}

func (v *Vault) rotateOne(ctx context.Context, appid, openid string, st *RotateStats) error {
	for range 5 {
		rec, err := v.Get(ctx, appid, openid)
		if errors.Is(err, ErrNotFound) {
			st.Gone++
			return nil
		}
		if err != nil {
			return err
		}
		if rec.KeyID == st.CurrentKeyID {
			st.Current++
			return nil
		}
		if !rec.Tokens.RefreshValid(v.opts.Now()) {
			// Useless already: let it go rather than re-encrypt it, unless
			// a new login replaced it meanwhile.
			res, err := v.ForgetIf(ctx, appid, openid, rec.Revision)
			if err != nil {
				return err
			}
			if res == ChangedMeanwhile {
				continue
			}
			st.Gone++
			return nil
		}
		_, err = v.StoreIf(ctx, appid, openid, rec.Tokens, rec.Revision)
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue
		}
		if err != nil {
			return err
		}
		st.Reencrypted++
		return nil
	}
	return errors.New("the record kept changing")
}
