package clientlimit

import (
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"
)

// 10,000 clients, each from its own address, in a table of 100: it
// never holds more than 100, the ones used last are the ones it keeps,
// and a client idle until its burst is full again is forgotten.
func TestClientTableIsBoundedAndForgetsIdleClients(t *testing.T) {
	t.Parallel()
	c := New(1, 2, 100) // a full burst again after 2 s idle
	now := time.Unix(1_700_000_000, 0)
	key := func(i int) netip.Prefix {
		return Key(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}))
	}
	for i := range 10000 {
		if !c.Allow(key(i), now) {
			t.Fatalf("client %d refused its first request", i)
		}
		if n := c.Len(); n > 100 {
			t.Fatalf("after client %d the table holds %d clients, want at most 100", i, n)
		}
	}
	if _, kept := c.byKey[key(9999)]; !kept || c.Len() != 100 {
		t.Fatalf("table of %d, the last client kept %v; want 100 and true", c.Len(), kept)
	}
	if _, kept := c.byKey[key(0)]; kept {
		t.Fatal("the first client is still in a full table")
	}
	if !c.Allow(key(9999), now) || c.Allow(key(9999), now) {
		t.Fatal("the last client's budget (burst 2) was not kept")
	}

	now = now.Add(2 * time.Second)
	c.Allow(key(10000), now)
	if n := c.Len(); n != 1 {
		t.Fatalf("after 2 s idle the table holds %d clients, want only the new one", n)
	}
}

// An IPv6 client is its /64: addresses from one /64 share one budget.
func TestIPv6ClientIsItsSlash64(t *testing.T) {
	t.Parallel()
	c := New(0.001, 2, 100)
	now := time.Now()
	for i, a := range []string{"2001:db8:1:2::1", "2001:db8:1:2:ffff::7", "2001:db8:1:2::1%eth0"} {
		if got, want := c.Allow(Key(netip.MustParseAddr(a)), now), i < 2; got != want {
			t.Fatalf("%s: allowed %v, want %v", a, got, want)
		}
	}
	if !c.Allow(Key(netip.MustParseAddr("2001:db8:1:3::1")), now) {
		t.Fatal("another /64 shares the budget")
	}
	if c.Len() != 2 {
		t.Fatalf("%d clients, want 2", c.Len())
	}
}

func TestClientAddr(t *testing.T) {
	t.Parallel()
	trusted := Trust([]netip.Prefix{
		netip.MustParsePrefix("127.0.0.1/32"),
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("::ffff:192.168.0.0/112"), // as 192.168.0.0/16
	})
	cases := []struct {
		name    string
		remote  string
		xff     []string
		want    string
		ignored bool
	}{
		{"untrusted peer", "198.51.100.1:1234", nil, "198.51.100.1", false},
		{"untrusted peer's X-Forwarded-For", "198.51.100.1:1234", []string{"203.0.113.9"}, "198.51.100.1", true},
		{"trusted peer alone", "127.0.0.1:1234", nil, "127.0.0.1", false},
		{"through the proxy", "127.0.0.1:1234", []string{"198.51.100.7"}, "198.51.100.7", false},
		{"made-up hop left of the client", "127.0.0.1:1234", []string{"203.0.113.9, 198.51.100.7"}, "198.51.100.7", false},
		{"two proxies, two headers", "127.0.0.1:1234", []string{"203.0.113.9", "198.51.100.7, 10.1.2.3"}, "198.51.100.7", false},
		{"every hop trusted", "127.0.0.1:1234", []string{"10.0.0.3, 10.0.0.2"}, "10.0.0.3", false},
		{"unreadable hop", "127.0.0.1:1234", []string{"198.51.100.7, junk"}, "127.0.0.1", false},
		{"empty hop", "127.0.0.1:1234", []string{"198.51.100.7,"}, "127.0.0.1", false},
		{"hop with a port", "127.0.0.1:1234", []string{"198.51.100.7:4711"}, "198.51.100.7", false},
		{"IPv6 hop with a port", "127.0.0.1:1234", []string{"[2001:db8::1]:4711"}, "2001:db8::1", false},
		{"IPv6 hop", "127.0.0.1:1234", []string{"2001:db8::1"}, "2001:db8::1", false},
		{"IPv4-mapped trusted peer", "[::ffff:127.0.0.1]:1234", []string{"198.51.100.7"}, "198.51.100.7", false},
		{"trusted as a mapped prefix", "192.168.4.5:1234", []string{"198.51.100.7"}, "198.51.100.7", false},
		{"unreadable peer", "@", []string{"198.51.100.7"}, "invalid IP", false},
	}
	for _, c := range cases {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = c.remote
		for _, v := range c.xff {
			r.Header.Add("X-Forwarded-For", v)
		}
		got, ignored := trusted.Addr(r)
		if got.String() != c.want || ignored != c.ignored {
			t.Errorf("%s: %v (ignored %v), want %s (ignored %v)", c.name, got, ignored, c.want, c.ignored)
		}
	}
}
