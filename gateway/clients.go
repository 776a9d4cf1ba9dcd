package gateway

import (
	"crypto/sha256"
	"crypto/subtle"
	"strings"

	"golang.org/x/time/rate"
)

// client is a configured Client with its limiter.
type client struct {
	Client
	keySum  [32]byte
	limiter *rate.Limiter // nil: unlimited
}

func newClient(c Client) *client {
	cl := &client{Client: c, keySum: sha256.Sum256([]byte(c.Key))}
	if c.Rate > 0 {
		burst := c.Burst
		if burst <= 0 {
			burst = max(1, int(c.Rate))
		}
		cl.limiter = rate.NewLimiter(rate.Limit(c.Rate), burst)
	}
	return cl
}

func (c *client) allowsApp(appid string) bool { return clientAllows(c.AppIDs, appid) }

// allowsPath reports whether the client may call path.
func (c *client) allowsPath(path string) bool {
	if len(c.Paths) == 0 {
		return true
	}
	for _, p := range c.Paths {
		if strings.HasPrefix(path, p) {
			return true
		}
	}
	return false
}

// allow spends one call of the client's rate.
func (c *client) allow() bool { return c.limiter == nil || c.limiter.Allow() }

// authenticate returns the client whose key is key, or nil. Every client's
// key is compared, in constant time on SHA-256 sums (so neither the key's
// length nor which client matched shows in the timing).
func (g *Gateway) authenticate(key string) *client {
	sum := sha256.Sum256([]byte(key))
	var found *client
	for _, c := range g.clients {
		if subtle.ConstantTimeCompare(sum[:], c.keySum[:]) == 1 && found == nil {
			found = c
		}
	}
	return found
}
