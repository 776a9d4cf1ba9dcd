package cas_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/broker/brokertest"
	"github.com/wxhub/wxhub/internal/cas"
)

// TestLostOnAReplicatedBucket races writers with the same expected
// revision on a bucket replicated over three servers, as production runs
// it, through each way wxhub writes with one: exactly one writer wins,
// and every loser's error is Lost (JetStream answers 10164 on a
// replicated stream while another write of the key is in flight, 10071
// once it is stored; a check for 10071 alone misses the first).
func TestLostOnAReplicatedBucket(t *testing.T) {
	urls := brokertest.StartCluster(t, 3)
	nc, err := nats.Connect(strings.Join(urls, ","))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "cas_test", Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	writes := []struct {
		name  string
		write func(ctx context.Context, key string, rev uint64) error
	}{
		{"kv update", func(ctx context.Context, key string, rev uint64) error {
			_, err := kv.Update(ctx, key, []byte("v"), rev)
			return err
		}},
		{"kv delete with last revision", func(ctx context.Context, key string, rev uint64) error {
			return kv.Delete(ctx, key, jetstream.LastRevision(rev))
		}},
		{"kv purge with last revision", func(ctx context.Context, key string, rev uint64) error {
			return kv.Purge(ctx, key, jetstream.LastRevision(rev))
		}},
		{"publish expecting the subject's last sequence", func(ctx context.Context, key string, rev uint64) error {
			_, err := js.PublishMsg(ctx, &nats.Msg{Subject: "$KV.cas_test." + key, Data: []byte("v")},
				jetstream.WithExpectLastSequencePerSubject(rev))
			return err
		}},
	}
	const writers = 16
	for _, w := range writes {
		t.Run(w.name, func(t *testing.T) {
			codes := map[jetstream.ErrorCode]int{}
			for round := range 8 {
				key := fmt.Sprintf("k%d", round)
				rev, err := kv.Put(ctx, key, []byte("first"))
				if err != nil {
					t.Fatal(err)
				}
				var (
					mu   sync.Mutex
					won  int
					errs []error
					wg   sync.WaitGroup
				)
				start := make(chan struct{})
				for range writers {
					wg.Go(func() {
						<-start
						err := w.write(ctx, key, rev)
						mu.Lock()
						defer mu.Unlock()
						if err == nil {
							won++
						} else {
							errs = append(errs, err)
						}
					})
				}
				close(start)
				wg.Wait()
				if won != 1 {
					t.Fatalf("%d writers won a compare-and-set, want 1 (errors: %v)", won, errs)
				}
				for _, err := range errs {
					if !cas.Lost(err) {
						t.Fatalf("a lost compare-and-set is not Lost: %v", err)
					}
					var api *jetstream.APIError
					if errors.As(err, &api) {
						codes[api.ErrorCode]++
					}
				}
			}
			t.Logf("losers' JetStream error codes: %v", codes)
		})
	}
}

func TestLost(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"revision mismatch", fmt.Errorf("update: %w", jetstream.ErrKeyRevisionMismatch), true},
		{"key exists", jetstream.ErrKeyExists, true},
		{"wrong last sequence", &jetstream.APIError{ErrorCode: jetstream.JSErrCodeStreamWrongLastSequence}, true},
		{"wrong last sequence, replicated", fmt.Errorf("store: %w", &jetstream.APIError{ErrorCode: jetstream.JSErrCodeStreamWrongLastSequenceConstant}), true},
		{"another API error", &jetstream.APIError{ErrorCode: jetstream.JSErrCodeStreamNotFound}, false},
		{"key not found", jetstream.ErrKeyNotFound, false},
		{"timeout", context.DeadlineExceeded, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := cas.Lost(tt.err); got != tt.want {
				t.Errorf("Lost(%v) = %t, want %t", tt.err, got, tt.want)
			}
		})
	}
}
