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

// TestDuplicateInProcessOnAReplicatedStream races publishes with one
// Nats-Msg-Id on a stream replicated over three servers, rounds of them
// until at least one was refused: exactly one publish per round is
// stored, every other is acked as a duplicate or refused with an error
// that DuplicateInProcess knows (10158, while the first is being stored),
// and a refused one published again once the first is acked is acked as
// its duplicate.
func TestDuplicateInProcessOnAReplicatedStream(t *testing.T) {
	urls := brokertest.StartCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const publishers = 16
	var jss []jetstream.JetStream
	for range publishers {
		nc, err := nats.Connect(strings.Join(urls, ",")) // each on one of the three, at random
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		jss = append(jss, js)
	}
	if _, err := jss[0].CreateStream(ctx, jetstream.StreamConfig{Name: "DEDUP", Subjects: []string{"dedup"}, Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	refused := 0
	for round := 0; refused == 0; round++ {
		if ctx.Err() != nil {
			t.Fatalf("no publish refused in %d rounds of %d", round, publishers)
		}
		id := fmt.Sprintf("m%d", round)
		var (
			mu            sync.Mutex
			stored, dupes int
			refusals      []error
			wg            sync.WaitGroup
		)
		start := make(chan struct{})
		for _, js := range jss {
			wg.Go(func() {
				m := nats.NewMsg("dedup")
				m.Header.Set(jetstream.MsgIDHeader, id)
				<-start
				ack, err := js.PublishMsg(ctx, m)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err != nil:
					refusals = append(refusals, err)
				case ack.Duplicate:
					dupes++
				default:
					stored++
				}
			})
		}
		close(start)
		wg.Wait()
		if stored != 1 {
			t.Fatalf("round %d: %d publishes of one Nats-Msg-Id stored, want 1", round, stored)
		}
		for _, err := range refusals {
			if !cas.DuplicateInProcess(err) {
				t.Fatalf("round %d: a publish failed, not as a duplicate in process: %v", round, err)
			}
		}
		if len(refusals) > 0 {
			m := nats.NewMsg("dedup")
			m.Header.Set(jetstream.MsgIDHeader, id)
			// The stored one is acked, so stored on its stream's leader:
			// a refused publish published again is its duplicate.
			ack, err := jss[0].PublishMsg(ctx, m)
			if err != nil || !ack.Duplicate {
				t.Fatalf("round %d: a refused publish published again: %+v, %v; want a duplicate ack", round, ack, err)
			}
			t.Logf("round %d: %d stored, %d duplicates, %d refused (%v)", round, stored, dupes, len(refusals), refusals[0])
		}
		refused += len(refusals)
	}
}

func TestDuplicateInProcess(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"10158", fmt.Errorf("publish: %w", &jetstream.APIError{Code: 409, ErrorCode: cas.ErrCodeDuplicateInProcess, Description: "duplicate message id is in process"}), true},
		{"a lost compare-and-set", &jetstream.APIError{ErrorCode: jetstream.JSErrCodeStreamWrongLastSequence}, false},
		{"no stream", jetstream.ErrNoStreamResponse, false},
		{"timeout", context.DeadlineExceeded, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := cas.DuplicateInProcess(tt.err); got != tt.want {
				t.Errorf("DuplicateInProcess(%v) = %t, want %t", tt.err, got, tt.want)
			}
		})
	}
}
