package broker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// BucketKeys lists the keys of KV bucket through js with JetStream API
// requests alone: the subjects of the bucket's stream (stream info with a
// subject filter, paged by the client). Unlike KeyValue.Keys or
// ListKeys, it creates no consumer, so it works through an API prefix of
// another account (JetStreams.Bucket), where a KV watch cannot: its push
// consumer would deliver into the bucket's account.
//
// The list may name a key whose last entry is a delete or purge marker;
// a Get of it returns jetstream.ErrKeyNotFound. The keys are sorted. A
// bucket that does not exist is an error wrapping
// jetstream.ErrBucketNotFound.
func BucketKeys(ctx context.Context, js jetstream.JetStream, bucket string) ([]string, error) {
	stream, err := js.Stream(ctx, "KV_"+bucket)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("broker: bucket %s: %w", bucket, jetstream.ErrBucketNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("broker: bucket %s: %w", bucket, err)
	}
	pre := "$KV." + bucket + "."
	info, err := stream.Info(ctx, jetstream.WithSubjectFilter(pre+">"))
	if err != nil {
		return nil, fmt.Errorf("broker: keys of bucket %s: %w", bucket, err)
	}
	keys := make([]string, 0, len(info.State.Subjects))
	for subject := range info.State.Subjects {
		if k, ok := strings.CutPrefix(subject, pre); ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys, nil
}
