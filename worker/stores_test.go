package worker_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/wxhub/wxhub/broker/brokertest"
	"github.com/wxhub/wxhub/handlers"
	"github.com/wxhub/wxhub/worker"
)

// "16 claims of a deleted code, 1 created, 15 ErrOAuthExists", also on a
// wx_oauth replicated over three servers. Over a delete marker nats.go's
// Create writes expecting the marker's revision and passes a replicated
// bucket's 10164 on bare: the store must still answer ErrOAuthExists, as
// OAuthStore.Create promises, not an error the handler retries as a
// store failure.
func TestKVOAuthStoreClaimsOfADeletedRecordOneCreated(t *testing.T) {
	t.Parallel()
	brokertest.OneAndThree(t, func(t *testing.T, env *brokertest.Env) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		s := worker.NewKVOAuthStore(env.JS)
		for round := range 4 {
			key := handlers.OAuthKey("wxapp", string(rune('a'+round)))
			rev, err := s.Create(ctx, key, handlers.OAuthRecord{State: handlers.OAuthClaimed, JobID: "first"})
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Delete(ctx, key, rev); err != nil {
				t.Fatal(err)
			}
			var (
				mu      sync.Mutex
				created int
				other   []error
				wg      sync.WaitGroup
			)
			start := make(chan struct{})
			for range 16 {
				wg.Go(func() {
					<-start
					_, err := s.Create(ctx, key, handlers.OAuthRecord{State: handlers.OAuthClaimed, JobID: "again"})
					mu.Lock()
					defer mu.Unlock()
					switch {
					case err == nil:
						created++
					case !errors.Is(err, handlers.ErrOAuthExists):
						other = append(other, err)
					}
				})
			}
			close(start)
			wg.Wait()
			if created != 1 || len(other) > 0 {
				t.Fatalf("round %d: %d claims created the record, want 1; errors other than ErrOAuthExists: %v", round, created, other)
			}
		}
	})
}
