package broker

import (
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wxhub/wxhub/internal/redact"
)

// ConnConfig says how to reach NATS. The zero value with URL set connects
// without authentication.
type ConnConfig struct {
	URL       string // nats://host:port, comma-separated for a cluster
	Name      string // connection name shown by the server
	CredsFile string // NATS credentials (JWT + nkey) file
	NKeyFile  string // nkey seed file
	User      string
	Password  string
	Token     string
	TLSCA     string // CA bundle to verify the server
	TLSCert   string // client certificate (mutual TLS)
	TLSKey    string // client key (mutual TLS)
	// InboxPrefix replaces "_INBOX" in reply subjects: each role may
	// subscribe to its own inbox only (grants.Role.InboxPrefix).
	InboxPrefix string
}

// Validate reports the first configuration error, naming the field.
func (c ConnConfig) Validate() error {
	if c.URL == "" {
		return errors.New("nats-url: required")
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return errors.New("nats-tls-cert and nats-tls-key: set both or neither")
	}
	if c.Password != "" && c.User == "" {
		return errors.New("nats-user: required when nats-password is set")
	}
	return nil
}

// Connect dials NATS with reconnects forever (a control plane outlives
// brief cluster outages) and returns the connection.
func Connect(cfg ConnConfig) (*nats.Conn, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	opts := []nats.Option{
		nats.Name(cfg.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.RetryOnFailedConnect(false),
	}
	if cfg.InboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(cfg.InboxPrefix))
	}
	if cfg.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(cfg.CredsFile))
	}
	if cfg.NKeyFile != "" {
		o, err := nats.NkeyOptionFromSeed(cfg.NKeyFile)
		if err != nil {
			return nil, fmt.Errorf("broker: nats-nkey-file: %w", err)
		}
		opts = append(opts, o)
	}
	if cfg.User != "" {
		opts = append(opts, nats.UserInfo(cfg.User, cfg.Password))
	}
	if cfg.Token != "" {
		opts = append(opts, nats.Token(cfg.Token))
	}
	if cfg.TLSCA != "" {
		opts = append(opts, nats.RootCAs(cfg.TLSCA))
	}
	if cfg.TLSCert != "" {
		opts = append(opts, nats.ClientCert(cfg.TLSCert, cfg.TLSKey))
	}
	nc, err := nats.Connect(cfg.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("broker: connect to NATS at %s: %w", redact.URL(cfg.URL), redact.Error(err))
	}
	return nc, nil
}
