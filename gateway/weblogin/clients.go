package weblogin

import (
	"container/list"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// DefaultClientRate and DefaultClientBurst bound the logins started by
// one client (one IPv4 address, one IPv6 /64), besides the limit of all
// browsers together: one client alone cannot take the whole
// AuthorizeRate from everybody else (at the defaults it takes a tenth).
// DefaultMaxClients bounds the clients remembered.
const (
	DefaultClientRate  = 5.0
	DefaultClientBurst = 20
	DefaultMaxClients  = 10000
)

// maxClientIdle caps how long an idle client's limiter is kept (see
// clientLimits.idle), whatever the rate.
const maxClientIdle = time.Hour

// clientKey is the budget a client's logins count against: its IPv4
// address, or its IPv6 address's /64 (what one host or one customer
// usually gets: an address per request from a /64 is still one client).
// The zero Prefix stands for every client whose address is unknown.
func clientKey(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	switch {
	case !a.IsValid():
		return netip.Prefix{}
	case a.Is4():
		return netip.PrefixFrom(a, 32)
	default:
		p, _ := a.WithZone("").Prefix(64)
		return p
	}
}

// clientLimits is the table of per-client limiters, bounded in memory:
// a limiter idle long enough to be full again is dropped (keeping it
// would change nothing), and when the table holds max clients, the one
// used least recently makes room for a new one. Eviction, not "the
// global limit only when full": a client whose limiter is evicted just
// starts again with a full burst, which an attacker gets anyway from a
// fresh address, while clients that keep coming keep their limiters; a
// table that stopped limiting new clients once full would let anyone with
// max addresses turn the per-client limit off for everybody.
type clientLimits struct {
	limit rate.Limit
	burst int
	max   int
	idle  time.Duration // the time an empty limiter takes to fill up

	mu    sync.Mutex
	byKey map[netip.Prefix]*list.Element // of *clientLimit
	lru   list.List                      // front: used last
}

type clientLimit struct {
	key  netip.Prefix
	lim  *rate.Limiter
	used time.Time
}

func newClientLimits(r float64, burst, max int) *clientLimits {
	idle := maxClientIdle
	if d := time.Duration(float64(burst) / r * float64(time.Second)); d > 0 && d < idle {
		idle = d
	}
	return &clientLimits{limit: rate.Limit(r), burst: burst, max: max, idle: idle, byKey: make(map[netip.Prefix]*list.Element)}
}

// allow reports whether client key may start a login at now, taking one
// from its budget if so.
func (c *clientLimits) allow(key netip.Prefix, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for e := c.lru.Back(); e != nil && now.Sub(e.Value.(*clientLimit).used) >= c.idle; e = c.lru.Back() {
		c.remove(e)
	}
	e := c.byKey[key]
	if e == nil {
		if c.lru.Len() >= c.max {
			c.remove(c.lru.Back())
		}
		e = c.lru.PushFront(&clientLimit{key: key, lim: rate.NewLimiter(c.limit, c.burst)})
		c.byKey[key] = e
	} else {
		c.lru.MoveToFront(e)
	}
	cl := e.Value.(*clientLimit)
	cl.used = now
	return cl.lim.AllowN(now, 1)
}

func (c *clientLimits) remove(e *list.Element) {
	c.lru.Remove(e)
	delete(c.byKey, e.Value.(*clientLimit).key)
}

// len is the number of clients remembered.
func (c *clientLimits) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}

// clientAddr is the address of the browser behind r: the peer's
// (RemoteAddr), unless the peer is a trusted proxy; then the
// X-Forwarded-For addresses are read from the right (each proxy appends
// the address it got the request from) and the first one that is not a
// trusted proxy is the client's; everything left of it may be made up.
// When every hop is trusted, the leftmost; when an entry cannot be read,
// the hop right of it. ignored reports an X-Forwarded-For that was not
// read because the peer is not trusted.
func clientAddr(r *http.Request, trusted []netip.Prefix) (client netip.Addr, ignored bool) {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}, false
	}
	client = ap.Addr().Unmap()
	xff := r.Header.Values("X-Forwarded-For")
	if !isTrusted(client, trusted) {
		return client, len(xff) > 0
	}
	for i := len(xff) - 1; i >= 0; i-- {
		hops := strings.Split(xff[i], ",")
		for j := len(hops) - 1; j >= 0; j-- {
			a, ok := parseHop(hops[j])
			if !ok {
				return client, false
			}
			client = a
			if !isTrusted(a, trusted) {
				return client, false
			}
		}
	}
	return client, false
}

// parseHop reads one X-Forwarded-For entry: an address, or one with a
// port ("192.0.2.1:4711", "[2001:db8::1]:4711").
func parseHop(s string) (netip.Addr, bool) {
	s = strings.TrimSpace(s)
	if a, err := netip.ParseAddr(strings.Trim(s, "[]")); err == nil {
		return a.Unmap(), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap(), true
	}
	return netip.Addr{}, false
}

// trustedPrefix is p as isTrusted compares it: masked, and an
// IPv4-mapped IPv6 prefix as the IPv4 one (addresses are unmapped).
func trustedPrefix(p netip.Prefix) netip.Prefix {
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p.Masked()
}

func isTrusted(a netip.Addr, trusted []netip.Prefix) bool {
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
