package vault

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/internal/cas"
)

// The vault reads through the bucket stream's leader, never from a
// follower: a KV Get is a direct get (nats.go gives every bucket
// AllowDirect), which on a replicated bucket the replica on the
// connection's server answers from its own copy, and a follower may not
// have applied the last writes yet. The leader acknowledges a write only
// once it has applied it, so a read through it sees every write that was
// acknowledged before the read was sent: a Store followed by a Get in one
// process, and a compare-and-set based on the revision a read returned.
// (Across a change of leader we rely on nats-server's new leader having
// applied what its predecessor acknowledged before it answers; the tests
// do not elect one.)

// entry is a key's last message in the bucket, as the stream's leader has
// it.
type entry struct {
	value    []byte
	revision uint64
	// deleted: the last message is a delete, purge or TTL marker.
	deleted bool
}

// last returns key's last message as the stream's leader has it;
// jetstream.ErrKeyNotFound when the key has none.
func (v *Vault) last(ctx context.Context, key string) (entry, error) {
	ctx, cancel := v.withTimeout(ctx)
	defer cancel()
	req, err := json.Marshal(struct {
		LastFor string `json:"last_by_subj"`
	}{v.subject(key)})
	if err != nil {
		return entry{}, err
	}
	msg, err := v.js.Conn().RequestWithContext(ctx, v.api+"STREAM.MSG.GET."+v.stream, req)
	if err != nil {
		return entry{}, fmt.Errorf("asking the stream leader for %s: %w", key, err)
	}
	var resp struct {
		Error   *jetstream.APIError `json:"error"`
		Message *struct {
			Sequence uint64 `json:"seq"`
			Header   []byte `json:"hdrs"`
			Data     []byte `json:"data"`
		} `json:"message"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return entry{}, fmt.Errorf("the stream leader's answer for %s: %w", key, err)
	}
	if resp.Error != nil {
		if resp.Error.ErrorCode == jetstream.JSErrCodeMessageNotFound {
			return entry{}, jetstream.ErrKeyNotFound
		}
		return entry{}, fmt.Errorf("the stream leader's answer for %s: %w", key, resp.Error)
	}
	if resp.Message == nil {
		return entry{}, fmt.Errorf("the stream leader's answer for %s: %w", key, jetstream.ErrInvalidJetStreamResponse)
	}
	e := entry{value: resp.Message.Data, revision: resp.Message.Sequence}
	if len(resp.Message.Header) > 0 {
		h, err := nats.DecodeHeadersMsg(resp.Message.Header)
		if err != nil {
			return entry{}, fmt.Errorf("the headers of %s: %w", key, err)
		}
		op := h.Get("KV-Operation")
		e.deleted = op == "DEL" || op == "PURGE" || h.Get(jetstream.MarkerReasonHeader) != ""
	}
	return e, nil
}

// read returns key's value as the stream's leader has it;
// jetstream.ErrKeyNotFound when the key has none or was deleted.
func (v *Vault) read(ctx context.Context, key string) (entry, error) {
	e, err := v.last(ctx, key)
	if err == nil && e.deleted {
		return entry{}, jetstream.ErrKeyNotFound
	}
	return e, err
}

// create writes key only if it has no value (none ever, or a delete,
// purge or TTL marker last), as KV Create does but reading the marker's
// revision through the leader. A lost race is an error that cas.Lost
// knows.
func (v *Vault) create(ctx context.Context, key string, value []byte) (uint64, error) {
	rev := uint64(0)
	for {
		ack, err := v.js.Publish(ctx, v.subject(key), value, jetstream.WithExpectLastSequencePerSubject(rev))
		if err == nil {
			return ack.Sequence, nil
		}
		if !cas.Lost(err) || rev != 0 {
			return 0, err
		}
		e, rerr := v.last(ctx, key)
		if rerr != nil || !e.deleted {
			return 0, err // a value is there (or being written): lost
		}
		rev = e.revision // over the marker, once
	}
}

// list returns the bucket's keys matching filter (a KV key pattern), as
// the stream's leader has them, sorted. A key whose last message is a
// marker is listed too: read it to know.
func (v *Vault) list(ctx context.Context, filter string) ([]string, error) {
	st, err := v.js.Stream(ctx, v.stream)
	if err != nil {
		return nil, err
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(v.subject(filter)))
	if err != nil {
		return nil, err
	}
	pre := v.subject("")
	out := make([]string, 0, len(info.State.Subjects))
	for subj := range info.State.Subjects {
		if k, ok := strings.CutPrefix(subj, pre); ok {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out, nil
}

// await returns key's value once it has one: the write that won a race
// we lost may still be being stored. It watches the key, so it takes the
// value whenever the watch's server has it.
func (v *Vault) await(ctx context.Context, key string) ([]byte, error) {
	ctx, cancel := v.withTimeout(ctx)
	defer cancel()
	w, err := v.kv.Watch(ctx, key)
	if err != nil {
		return nil, err
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return nil, errors.New("the watch ended")
			}
			if e != nil && e.Operation() == jetstream.KeyValuePut {
				return e.Value(), nil
			}
		}
	}
}

// withTimeout gives ctx js's default timeout (5 s if it has none) unless
// it has a deadline already.
func (v *Vault) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	timeout := v.js.Options().DefaultTimeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	return context.WithTimeout(ctx, timeout)
}

// subject is the stream subject of a key.
func (v *Vault) subject(key string) string { return "$KV." + v.opts.Bucket + "." + key }

// apiPrefix is the JetStream API prefix js sends its requests with.
func apiPrefix(js jetstream.JetStream) string {
	o := js.Options()
	switch {
	case o.APIPrefix != "":
		return strings.TrimSuffix(o.APIPrefix, ".") + "."
	case o.Domain != "":
		return "$JS." + o.Domain + ".API."
	}
	return jetstream.DefaultAPIPrefix
}
