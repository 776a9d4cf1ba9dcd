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
	Records      int      // user records seen
	Reencrypted  int      // re-encrypted under the newest key
	Current      int      // already under the newest key
	Gone         int      // deleted or expired while rotating
	Failed       int      // could not be read (their key is missing or wrong)
	RetiredKeys  []string // check records removed: these keys may leave the ring
	CurrentKeyID string
}

// Rotate re-encrypts every record not under the newest key, keeping its
// TTL (the refresh_token's remaining life); a record changed meanwhile is
// read again. When every record is under the newest key, the check
// records of the other keys are removed, so those keys may then be taken
// out of the keyring. Run it after every process has the new keyring.
func (v *Vault) Rotate(ctx context.Context) (RotateStats, error) {
	st := RotateStats{CurrentKeyID: v.ring.Current()}
	keys, err := v.keys(ctx, userPrefix+">")
	if err != nil {
		return st, fmt.Errorf("vault: listing records: %w", err)
	}
	var failures []error
	for _, k := range keys {
		appid, openid, ok := strings.Cut(strings.TrimPrefix(k, userPrefix), ".")
		if !ok {
			continue
		}
		st.Records++
		if err := v.rotateOne(ctx, appid, openid, &st); err != nil {
			st.Failed++
			failures = append(failures, fmt.Errorf("%s: %w", k, err))
		}
	}
	if len(failures) > 0 {
		return st, fmt.Errorf("vault: rotate: %d of %d records not re-encrypted: %w", len(failures), st.Records, errors.Join(failures...))
	}
	checks, err := v.keys(ctx, checkPrefix+"*")
	if err != nil {
		return st, fmt.Errorf("vault: listing key check records: %w", err)
	}
	for _, k := range checks {
		id := k[len(checkPrefix):]
		if id == st.CurrentKeyID {
			continue
		}
		if err := v.kv.Purge(ctx, k, jetstream.PurgeTTL(time.Minute)); err != nil {
			return st, fmt.Errorf("vault: retiring key %q: %w", id, err)
		}
		st.RetiredKeys = append(st.RetiredKeys, id)
	}
	return st, nil
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
