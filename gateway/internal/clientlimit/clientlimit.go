// Package clientlimit limits what one client may do, a client being the
// address behind a request: its IPv4 address or its IPv6 /64 (Key), read
// from X-Forwarded-For only when the peer is a trusted proxy (Addr). A
// Table holds one golang.org/x/time/rate limiter per client, bounded in
// memory: idle limiters are forgotten, and a full table forgets the one
// used least recently. The web login (logins started per client) and the
// gateway (calls without a wxhub credential per client) use it.
package clientlimit

import (
	"container/list"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// DefaultMaxClients is the usual bound of the clients a Table remembers.
const DefaultMaxClients = 10000

// maxIdle caps how long an idle client's limiter is kept (see
// Table.idle), whatever the rate.
const maxIdle = time.Hour

// Key is the budget a client's requests count against: its IPv4
// address, or its IPv6 address's /64 (what one host or one customer
// usually gets: an address per request from a /64 is still one client).
// The zero Prefix stands for every client whose address is unknown.
func Key(a netip.Addr) netip.Prefix {
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

// Table is the table of per-client limiters, bounded in memory: a
// limiter idle long enough to be full again is dropped (keeping it
// would change nothing), and when the table holds max clients, the one
// used least recently makes room for a new one. Eviction, not "the
// global limit only when full": a client whose limiter is evicted just
// starts again with a full burst, which an attacker gets anyway from a
// fresh address, while clients that keep coming keep their limiters; a
// table that stopped limiting new clients once full would let anyone with
// max addresses turn the per-client limit off for everybody.
type Table struct {
	limit rate.Limit
	burst int
	max   int
	idle  time.Duration // the time an empty limiter takes to fill up

	mu    sync.Mutex
	byKey map[netip.Prefix]*list.Element // of *entry
	lru   list.List                      // front: used last
}

type entry struct {
	key  netip.Prefix
	lim  *rate.Limiter
	used time.Time
}

// New returns a Table allowing each client r a second with burst,
// remembering at most max clients (r > 0, burst ≥ 1, max ≥ 1).
func New(r float64, burst, max int) *Table {
	idle := maxIdle
	if d := time.Duration(float64(burst) / r * float64(time.Second)); d > 0 && d < idle {
		idle = d
	}
	return &Table{limit: rate.Limit(r), burst: burst, max: max, idle: idle, byKey: make(map[netip.Prefix]*list.Element)}
}

// Allow reports whether client key may go on at now, taking one from its
// budget if so.
func (t *Table) Allow(key netip.Prefix, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	for e := t.lru.Back(); e != nil && now.Sub(e.Value.(*entry).used) >= t.idle; e = t.lru.Back() {
		t.remove(e)
	}
	e := t.byKey[key]
	if e == nil {
		if t.lru.Len() >= t.max {
			t.remove(t.lru.Back())
		}
		e = t.lru.PushFront(&entry{key: key, lim: rate.NewLimiter(t.limit, t.burst)})
		t.byKey[key] = e
	} else {
		t.lru.MoveToFront(e)
	}
	en := e.Value.(*entry)
	en.used = now
	return en.lim.AllowN(now, 1)
}

func (t *Table) remove(e *list.Element) {
	t.lru.Remove(e)
	delete(t.byKey, e.Value.(*entry).key)
}

// Len is the number of clients remembered.
func (t *Table) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.lru.Len()
}

// Proxies are the trusted proxies, as Addr compares them: make them
// with Trust.
type Proxies []netip.Prefix

// Trust returns ps as Addr compares them: masked, and an IPv4-mapped
// IPv6 prefix as the IPv4 one (addresses are unmapped).
func Trust(ps []netip.Prefix) Proxies {
	var out Proxies
	for _, p := range ps {
		if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
		}
		out = append(out, p.Masked())
	}
	return out
}

func (ps Proxies) contains(a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Addr is the address of the client behind r: the peer's (RemoteAddr),
// unless the peer is a trusted proxy; then the X-Forwarded-For addresses
// are read from the right (each proxy appends the address it got the
// request from) and the first one that is not a trusted proxy is the
// client's; everything left of it may be made up. When every hop is
// trusted, the leftmost; when an entry cannot be read, the hop right of
// it. ignored reports an X-Forwarded-For that was not read because the
// peer is not trusted.
func (ps Proxies) Addr(r *http.Request) (client netip.Addr, ignored bool) {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}, false
	}
	client = ap.Addr().Unmap()
	xff := r.Header.Values("X-Forwarded-For")
	if !ps.contains(client) {
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
			if !ps.contains(a) {
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
