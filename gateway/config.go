package gateway

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/gateway/internal/clientlimit"
)

// Tokens is where the gateway reads each app's current global token: an
// in-memory cache fed by reads of wx_tokens (worker.TokenCache). The
// gateway never fetches a token itself.
type Tokens interface {
	Current(appid string) (events.TokenRecord, bool)
	WaitNewer(ctx context.Context, appid string, version uint64) (events.TokenRecord, error)
}

// Invalidator reports a token WeChat rejected (token.invalidated), at most
// once per version and interval (worker.Invalidator).
type Invalidator interface {
	Invalidate(ctx context.Context, appid string, version uint64, errcode int) error
}

// App is an app the gateway serves. Secret (the AppSecret) is needed only
// to exchange OAuth codes (/sns/oauth2/access_token).
type App struct {
	AppID  string
	Secret string
}

// Client is a business system allowed to use the gateway.
type Client struct {
	// Name identifies the client in metrics and logs ([A-Za-z0-9_.-]).
	Name string
	// Key is what the client sends as `secret` to the token endpoints and
	// /sns/oauth2/access_token, in place of the AppSecret.
	Key string
	// AppIDs the client may use; "*" means every configured app.
	AppIDs []string
	// Paths are the path prefixes the client may call (e.g. "/cgi-bin/user/",
	// "/sns/"); empty means every path.
	Paths []string
	// Rate limits the client's calls per second (token endpoints
	// included), with Burst; 0 means unlimited.
	Rate  float64
	Burst int
	// RealToken gives the client the real access_token instead of a
	// handle. At most one client per app may have it (relayed calls with
	// the real token are counted under that client).
	RealToken bool
}

// Config configures a Gateway. Tokens, BaseURL, Apps and Clients are
// required.
type Config struct {
	Tokens      Tokens
	Invalidator Invalidator // nil: rejected tokens are not reported
	// BaseURL is WeChat's (https://api.weixin.qq.com) or the simulator's.
	BaseURL string
	Apps    []App
	Clients []Client
	// Listen is the address of the HTTP front (default 127.0.0.1:8092);
	// TLSCert and TLSKey (files) turn on HTTPS, read again once they
	// change (a renewed certificate needs no restart).
	Listen          string
	TLSCert, TLSKey string
	// Mount adds handlers on the same front (ServeMux patterns such as
	// "/oauth/"); they take precedence over the relay for their paths.
	Mount map[string]http.Handler
	// MaxRequestBody and MaxResponseBody bound the bodies relayed
	// (default 20 MiB and 64 MiB; WeChat's media limits are 10-20 MB). A
	// call without a client (a user-token /sns call) may send 64 KiB.
	MaxRequestBody  int64
	MaxResponseBody int64
	// TokenWait bounds the wait for a token: a newer one after WeChat
	// rejected ours, or a first one (default 10 s).
	TokenWait time.Duration
	// Retries of idempotent GETs answered -1, 5xx or failing on the
	// network (default 3 attempts in all, 100 ms doubling).
	Attempts     int
	RetryInitial time.Duration
	// CallTimeout bounds one call to WeChat including retries (default 30 s);
	// twice it bounds the time to receive a request's body.
	CallTimeout time.Duration
	// MountWait is the longest a Mount handler may take to answer (the
	// web login's wait for its job's result, 0: none longer than a call).
	MountWait time.Duration
	// MaxBufferedBytes bounds the request bodies held in memory at once,
	// all calls together (default 128 MiB, at least MaxRequestBody): a
	// call takes its Content-Length (MaxRequestBody when not announced)
	// before its body is read and gives it back once answered. A call
	// that cannot have it within BodyBudgetWait is answered -1 (busy).
	MaxBufferedBytes int64
	// AnswerTimeout bounds the writing of a relayed answer to the
	// client, from its start (before its headers) to its last byte
	// (default DefaultAnswerTimeout, 60 s), and the answer is always
	// bounded to end within the drain: at most DrainTimeout −
	// HeaderTimeout − 1 s after the request came in. A client that stops
	// reading (a media download left unread) is cut then, instead of
	// holding its connection and the call without end, or past a drain.
	// The time before the answer (a token wait, the body, the call) is
	// not counted: the server has no WriteTimeout.
	AnswerTimeout time.Duration
	// DrainTimeout bounds the wait for the requests in flight on shutdown.
	// The default is DrainFor(TokenWait, CallTimeout, MountWait): what a
	// request may take, plus DrainMargin. A shorter one is refused: it
	// would cut requests still within their own bounds.
	DrainTimeout time.Duration
	// AnonymousRate and AnonymousBurst limit the calls that carry no
	// wxhub credential (user-token /sns calls) per second per client: an
	// IPv4 address or an IPv6 /64 (default 100, burst 2 × the rate: 200),
	// so that no caller can use up everybody's budget. MaxAnonymousClients
	// bounds the clients remembered (default 10,000): one idle until its
	// burst is full again is forgotten, and a full table forgets the one
	// used least recently (package clientlimit).
	AnonymousRate       float64
	AnonymousBurst      int
	MaxAnonymousClients int
	// TrustedProxies are the peers whose X-Forwarded-For names the
	// client for AnonymousRate (the rightmost address that is not a
	// trusted proxy); none by default: the client is the peer
	// (RemoteAddr), and behind a proxy not listed every caller is that
	// proxy's one client.
	TrustedProxies []netip.Prefix
	// Now is the clock (default time.Now).
	Now    func() time.Time
	Logger *slog.Logger
}

// Defaults of the bounds a request's time is made of.
const (
	DefaultTokenWait   = 10 * time.Second
	DefaultCallTimeout = 30 * time.Second
	// DrainMargin is added to the longest a request may take to make the
	// default DrainTimeout: the answer still has to be written (within
	// AnswerTimeout, cut to end within the drain).
	DrainMargin = 5 * time.Second
	// HeaderTimeout bounds the time to receive a request's headers (the
	// server's ReadHeaderTimeout); a request whose headers are on their
	// way when the drain begins is in flight too.
	HeaderTimeout = 10 * time.Second
	// DefaultAnswerTimeout is AnswerTimeout's default: the largest answer
	// (MaxResponseBody, 64 MiB) at about 1.1 MB/s; WeChat's media (10-20
	// MB) at about 0.35 MB/s.
	DefaultAnswerTimeout = time.Minute
	// DefaultMaxBufferedBytes is MaxBufferedBytes' default (raised to
	// MaxRequestBody when that is larger).
	DefaultMaxBufferedBytes = 128 << 20
	// DefaultMaxRequestBody is MaxRequestBody's default.
	DefaultMaxRequestBody = 20 << 20
	// DefaultAnonymousRate is AnonymousRate's default, per client;
	// DefaultMaxAnonymousClients is MaxAnonymousClients'.
	DefaultAnonymousRate       = 100
	DefaultMaxAnonymousClients = clientlimit.DefaultMaxClients
	// BodyBudgetWait is the longest a call waits for its share of
	// MaxBufferedBytes (at most CallTimeout) before it is answered -1.
	BodyBudgetWait = time.Second
)

// DrainFor is the drain that lets every request in flight finish within
// its own bounds, plus DrainMargin. Any request may take HeaderTimeout
// for its headers first. Then a relayed call or a token request may wait
// tokenWait for a token, take up to 2 × callTimeout for its body (the
// front's read deadline; the wait for body budget, at most callTimeout,
// runs within it) and callTimeout for WeChat's answer (repeats and the
// wait for a newer token included): tokenWait + 3 × callTimeout. A
// mounted handler may take mountWait. A zero tokenWait or callTimeout
// means its default (the default drain: 10 s + 10 s + 90 s + 5 s).
func DrainFor(tokenWait, callTimeout, mountWait time.Duration) time.Duration {
	if tokenWait <= 0 {
		tokenWait = DefaultTokenWait
	}
	if callTimeout <= 0 {
		callTimeout = DefaultCallTimeout
	}
	return HeaderTimeout + max(tokenWait+3*callTimeout, mountWait) + DrainMargin
}

var clientNameRe = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

func (c *Config) setDefaults() {
	if c.Listen == "" {
		c.Listen = "127.0.0.1:8092"
	}
	if c.MaxRequestBody <= 0 {
		c.MaxRequestBody = DefaultMaxRequestBody
	}
	if c.MaxResponseBody <= 0 {
		c.MaxResponseBody = 64 << 20
	}
	if c.TokenWait <= 0 {
		c.TokenWait = DefaultTokenWait
	}
	if c.Attempts <= 0 {
		c.Attempts = 3
	}
	if c.RetryInitial <= 0 {
		c.RetryInitial = 100 * time.Millisecond
	}
	if c.CallTimeout <= 0 {
		c.CallTimeout = DefaultCallTimeout
	}
	if c.AnswerTimeout <= 0 {
		c.AnswerTimeout = DefaultAnswerTimeout
	}
	if c.MaxBufferedBytes <= 0 {
		c.MaxBufferedBytes = max(DefaultMaxBufferedBytes, c.MaxRequestBody)
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = DrainFor(c.TokenWait, c.CallTimeout, c.MountWait)
	}
	if c.AnonymousRate == 0 {
		c.AnonymousRate = DefaultAnonymousRate
	}
	if c.AnonymousBurst == 0 {
		c.AnonymousBurst = max(1, int(2*c.AnonymousRate))
	}
	if c.MaxAnonymousClients == 0 {
		c.MaxAnonymousClients = DefaultMaxAnonymousClients
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate reports the first thing wrong with c, naming the field.
func (c Config) Validate() error {
	if c.Tokens == nil {
		return errors.New("gateway: Tokens is required")
	}
	u, err := url.Parse(c.BaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("gateway: base URL %q: want http(s)://host", c.BaseURL)
	}
	if len(c.Apps) == 0 {
		return errors.New("gateway: no app configured")
	}
	apps := map[string]bool{}
	for _, a := range c.Apps {
		apps[a.AppID] = true
	}
	if len(c.Clients) == 0 {
		return errors.New("gateway: no client configured (clients: name, key, appids)")
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return errors.New("gateway: tls_cert and tls_key go together")
	}
	if err := c.validateDrain(); err != nil {
		return err
	}
	if c.MaxBufferedBytes > 0 && c.MaxBufferedBytes < c.MaxRequestBody {
		return fmt.Errorf("gateway: max buffered bytes %d is less than the largest request body allowed (%d): such a body could never be read", c.MaxBufferedBytes, c.MaxRequestBody)
	}
	if c.AnonymousRate < 0 || c.AnonymousBurst < 0 || c.MaxAnonymousClients < 0 {
		return errors.New("gateway: anonymous rate, burst and max clients must not be negative")
	}
	for i, p := range c.TrustedProxies {
		if !p.IsValid() {
			return fmt.Errorf("gateway.trusted_proxies[%d]: %v is not a valid prefix", i, p)
		}
	}
	names := map[string]bool{}
	keys := map[[sha256.Size]byte]string{} // a client's key sum: its name
	realFor := map[string]string{}
	for i, cl := range c.Clients {
		switch {
		case !clientNameRe.MatchString(cl.Name):
			return fmt.Errorf("gateway.clients[%d].name: %q, want 1-64 letters, digits, _ . or -", i, cl.Name)
		case names[cl.Name]:
			return fmt.Errorf("gateway.clients[%d].name: %s appears twice", i, cl.Name)
		case len(cl.Key) < 16:
			return fmt.Errorf("gateway.clients[%d].key: missing or shorter than 16 characters for client %s (set key_file, or WXHUB_CLIENT_KEY_%s)", i, cl.Name, EnvName(cl.Name))
		case len(cl.AppIDs) == 0:
			return fmt.Errorf("gateway.clients[%d].appids: none for client %s (list them, or \"*\")", i, cl.Name)
		case cl.Rate < 0 || cl.Burst < 0:
			return fmt.Errorf("gateway.clients[%d].rate: must not be negative", i)
		}
		names[cl.Name] = true
		sum := sha256.Sum256([]byte(cl.Key))
		if other, ok := keys[sum]; ok {
			return fmt.Errorf("gateway.clients[%d].key: clients %s and %s have the same key; give each client its own", i, other, cl.Name)
		}
		keys[sum] = cl.Name
		for _, id := range cl.AppIDs {
			if id != "*" && !apps[id] {
				return fmt.Errorf("gateway.clients[%d].appids: %s is not a configured app", i, id)
			}
		}
		for _, p := range cl.Paths {
			if !strings.HasPrefix(p, "/") {
				return fmt.Errorf("gateway.clients[%d].paths: %q must start with /", i, p)
			}
		}
		if cl.RealToken {
			for _, a := range c.Apps {
				if !clientAllows(cl.AppIDs, a.AppID) {
					continue
				}
				if other, ok := realFor[a.AppID]; ok {
					return fmt.Errorf("gateway.clients[%d].real_token: %s and %s both get the real token of %s; at most one client per app may", i, other, cl.Name, a.AppID)
				}
				realFor[a.AppID] = cl.Name
			}
		}
	}
	return nil
}

// validateDrain refuses a DrainTimeout (0: the default) shorter than
// what a request in flight may take.
func (c Config) validateDrain() error {
	if c.DrainTimeout <= 0 {
		return nil
	}
	if need := DrainFor(c.TokenWait, c.CallTimeout, c.MountWait); c.DrainTimeout < need {
		return fmt.Errorf("gateway: drain timeout %v is shorter than a request in flight may take (%v: %v for the headers, then token wait + 3 × call timeout or the mounted handlers' wait, plus %v)", c.DrainTimeout, need, HeaderTimeout, DrainMargin)
	}
	return nil
}

// EnvName is the suffix of the environment variable holding a client's
// key: WXHUB_CLIENT_KEY_<EnvName(name)> (upper case, '-' and '.' as '_').
func EnvName(client string) string {
	return strings.NewReplacer("-", "_", ".", "_").Replace(strings.ToUpper(client))
}

func clientAllows(appids []string, appid string) bool {
	for _, id := range appids {
		if id == "*" || id == appid {
			return true
		}
	}
	return false
}
