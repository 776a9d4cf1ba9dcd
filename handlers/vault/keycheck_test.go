package vault_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/broker/brokertest"
	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/handlers/vault"
)

// countHandler counts the log records with one message.
type countHandler struct {
	msg string
	n   *atomic.Int32
}

func (h countHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h countHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Message == h.msg {
		h.n.Add(1)
	}
	return nil
}
func (h countHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h countHandler) WithGroup(string) slog.Handler      { return h }

// "9 processes open a new vault at once, 9 open it, 1 check record
// written", on one server and on three, on a bucket that never had the
// key's check record and on one where it was purged (a purge marker is
// its last message). Each process finds no check record for the key and
// creates it; all but one lose that create. A loser uses the winner's
// check record (which it must decrypt: the same key) instead of failing
// or writing its own over it. On a replicated bucket a loser is often
// told while the winner's write is still being stored, with error 10164,
// which nats.go's KV Create passes on bare over a marker (not as
// ErrKeyExists), and when not even the stream's leader has the record
// yet: the loser waits for it.
func TestOpenAtOnceOneCheckRecordAllOpen(t *testing.T) {
	t.Parallel()
	brokertest.OneAndThree(t, func(t *testing.T, env *brokertest.Env) {
		t.Parallel()
		k := ring(t, keyLine(t, "k1"))
		conns := serverConns(t, env)
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		for _, tc := range []struct {
			name   string
			purged bool
		}{
			{"never a check record", false},
			{"over a purged check record", true},
		} {
			for r := range 3 {
				bucket := fmt.Sprintf("vault_race_%v_%d", tc.purged, r)
				kv, err := env.JS.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucket, Replicas: env.Replicas})
				if err != nil {
					t.Fatal(err)
				}
				if tc.purged {
					if _, err := kv.Put(ctx, "k.k1", []byte("an older check record")); err != nil {
						t.Fatal(err)
					}
					if err := kv.Purge(ctx, "k.k1"); err != nil {
						t.Fatal(err)
					}
				}
				var written atomic.Int32
				logger := slog.New(countHandler{msg: "vault key check record written", n: &written})
				const n = 9
				// Every process has found no check record before any
				// creates one: they all create.
				var listed sync.WaitGroup
				listed.Add(n)
				allListed := vault.Hooks{BeforeCheckCreate: func() { listed.Done(); listed.Wait() }}
				var wg sync.WaitGroup
				for i := range n {
					js := conns[i%len(conns)]
					wg.Go(func() {
						if _, err := vault.OpenHooked(ctx, js, k, vault.Options{Bucket: bucket, Logger: logger}, allListed); err != nil {
							t.Errorf("%s, round %d, process %d: Open: %v", tc.name, r+1, i+1, err)
						}
					})
				}
				wg.Wait()
				if t.Failed() {
					return
				}
				if n := written.Load(); n != 1 {
					t.Fatalf("%s, round %d: %d processes wrote the key check record, want 1", tc.name, r+1, n)
				}
				// The record is the one every process checks: an Open
				// with another key under the same id is refused.
				if _, err := vault.Open(ctx, conns[0], ring(t, keyLine(t, "k1")), vault.Options{Bucket: bucket}); !errors.Is(err, vault.ErrWrongKey) {
					t.Fatalf("%s, round %d: Open with another key k1 after the race: %v, want ErrWrongKey", tc.name, r+1, err)
				}
			}
		}
	})
}

// A check record is bound to its key id (the GCM additional data names
// it), as a record is bound to its user: k1's check record copied under
// k.k2, its envelope relabelled "k2", does not pass for k2's, even when
// k2 is the same key material (a keyring line copied and renamed).
func TestCheckRecordCopiedUnderAnotherKeyIDIsRefused(t *testing.T) {
	t.Parallel()
	env := brokertest.Start(t)
	ctx := context.Background()
	line := keyLine(t, "k1")
	_, material, _ := strings.Cut(line, ":")
	openVault(t, env.JS, ring(t, line), &clock{now: time.Now()}) // writes k.k1
	kv, err := env.JS.KeyValue(ctx, events.BucketVault)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(ctx, "k.k1")
	if err != nil {
		t.Fatal(err)
	}
	var env1 vault.Envelope
	if err := json.Unmarshal(e.Value(), &env1); err != nil {
		t.Fatal(err)
	}
	env1.KeyID = "k2"
	b, err := json.Marshal(env1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Create(ctx, "k.k2", b); err != nil {
		t.Fatal(err)
	}
	_, err = vault.Open(ctx, env.JS, ring(t, line, "k2:"+material), vault.Options{})
	if !errors.Is(err, vault.ErrWrongKey) || !strings.Contains(err.Error(), `key "k2"`) {
		t.Fatalf("Open with k1's check record under k.k2 = %v, want ErrWrongKey naming k2", err)
	}
}
