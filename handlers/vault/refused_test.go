package vault_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/broker/brokertest"
	"github.com/wxhub/wxhub/handlers/vault"
)

// A Store the bucket refuses (here: a record over its max value size)
// fails with "nats: " said once: nats.go's publish wraps JetStream's
// "nats: API error: ..." in a "nats: " of its own. The error is still
// the *jetstream.APIError underneath, and names no token.
func TestStoreRefusedSaysNATSOnce(t *testing.T) {
	env := brokertest.Start(t)
	c := &clock{now: time.Now()}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const bucket = "wx_vault_small"
	if _, err := env.JS.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucket, MaxValueSize: 1024, LimitMarkerTTL: time.Minute}); err != nil {
		t.Fatal(err)
	}
	v, err := vault.Open(ctx, env.JS, ring(t, keyLine(t, "k1")), vault.Options{Bucket: bucket, Now: c.Now, RefreshTimeout: 2 * time.Second, LockTTL: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	big := tokens(c, 1)
	big.AccessToken = strings.Repeat("A", 2048)
	_, err = v.Store(ctx, "wxapp", "oAlice", big)
	if err == nil {
		t.Fatal("the bucket stored a record over its max value size")
	}
	if n := strings.Count(err.Error(), "nats: "); n != 1 {
		t.Errorf("error %q says \"nats: \" %d times, want once", err, n)
	}
	var api *jetstream.APIError
	if !errors.As(err, &api) || api.ErrorCode != jetstream.JSErrCodeStreamMessageExceedsMaximum {
		t.Errorf("errors.As(*jetstream.APIError) = %v, want err_code %d", api, jetstream.JSErrCodeStreamMessageExceedsMaximum)
	}
	if strings.Contains(err.Error(), big.AccessToken[:64]) {
		t.Errorf("the error carries the access token")
	}
}
