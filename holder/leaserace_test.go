package holder

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/internal/wxhubtest"
)

// replicatedLeases is wx_leases as a replicated (R3) bucket answers a
// lease Create that loses: over the delete or TTL marker of an earlier
// lease, JetStream's "wrong last sequence" comes as error 10164, which
// nats.go's Create passes on bare, not as ErrKeyExists.
type replicatedLeases struct {
	jetstream.KeyValue
	lost atomic.Int64
}

func (k *replicatedLeases) Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error) {
	rev, err := k.KeyValue.Create(ctx, key, value, opts...)
	if errors.Is(err, jetstream.ErrKeyExists) {
		k.lost.Add(1)
		return 0, &jetstream.APIError{Code: 400, ErrorCode: jetstream.JSErrCodeStreamWrongLastSequenceConstant, Description: "wrong last sequence"}
	}
	return rev, err
}

// A standby whose lease Create loses as a replicated bucket answers
// (10164) is standing by, not failing: it logs no warning however often
// it tries, and takes the lease once the leader releases it.
func TestStandbyLosingTheLeaseOnAReplicatedBucketIsQuiet(t *testing.T) {
	e := newTestEnv(t)
	app := e.newApp(events.ModeToken)
	h1 := e.start(e.config("h1", app), nil)
	waitRefreshed(t, e, app.AppID, 1)
	if !h1.leader(app.AppID) {
		t.Fatal("h1 does not lead")
	}
	leases := &replicatedLeases{}
	h2 := e.start(e.config("h2", app), func(h *Holder) {
		h.hooks.wrapKV = wrapBucket(events.BucketLeases, &leases.KeyValue, leases)
	})
	wxhubtest.Eventually(t, 10*time.Second, "h2 losing the lease a few times", func() bool { return leases.lost.Load() >= 3 })
	if containsLog(e.logs.String(), "WARN", "lease acquire failed") {
		t.Fatalf("a standby that lost the lease race logged a failure:\n%s", e.logs.String())
	}
	h1.stop(t)
	select {
	case l := <-h2.leaderCh:
		if !l {
			t.Fatal("h2 reported losing a lease it never had")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("h2 did not take the released lease")
	}
}
