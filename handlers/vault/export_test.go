package vault

import (
	"context"

	"github.com/nats-io/nats.go/jetstream"
)

// Hooks hold a vault at a point where it races others (see hooks).
type Hooks struct {
	// BeforeCheckCreate: Open found no check record of the newest key
	// and is about to create it.
	BeforeCheckCreate func()
	// RotateListed: Rotate listed the records it re-encrypts first.
	RotateListed func()
}

// OpenHooked is Open with hooks.
func OpenHooked(ctx context.Context, js jetstream.JetStream, ring *Keyring, opts Options, h Hooks) (*Vault, error) {
	opts.hooks = hooks{beforeCheckCreate: h.BeforeCheckCreate, rotateListed: h.RotateListed}
	return Open(ctx, js, ring, opts)
}
