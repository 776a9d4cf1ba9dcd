package holder

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/wechat"
)

// Defaults of Config. A zero field in Config means the default.
const (
	DefaultLeaseTTL            = 10 * time.Second
	DefaultRefreshMargin       = 10 * time.Minute
	DefaultJitter              = 2 * time.Minute
	DefaultMinForceInterval    = 30 * time.Second
	DefaultConflictWindow      = 10 * time.Minute
	DefaultQuotaDailyLimit     = 2000
	DefaultQuotaReserve        = 200
	DefaultCheckInterval       = time.Second
	DefaultRetryInitial        = time.Second
	DefaultRetryMax            = 5 * time.Minute
	DefaultConfigRetryInterval = 5 * time.Minute

	// StableForceDailyLimit is WeChat's limit of force_refresh=true calls
	// to /cgi-bin/stable_token per appid and day.
	StableForceDailyLimit = 20
	// StableForceMinInterval is WeChat's minimum spacing of force_refresh
	// calls; a forced call within it returns the current token unchanged.
	StableForceMinInterval = 30 * time.Second
	// stableMaxMargin keeps stable_token refreshes inside the last five
	// minutes of the token's life, the only time a force_refresh=false
	// call returns a new token.
	stableMaxMargin = 4 * time.Minute
	stableMaxJitter = 30 * time.Second
)

// App is one WeChat account (official account or mini program) whose global
// access_token the holder keeps.
type App struct {
	// AppID is WeChat's appid; it is the key in wx_tokens and wx_leases.
	AppID string
	// Secret is the AppSecret. Leave it empty and set SecretFile to read it
	// from a file instead. It never appears in KV, events, logs or errors.
	Secret string
	// SecretFile is a file holding the AppSecret (surrounding whitespace is
	// trimmed), e.g. a mounted Kubernetes secret.
	SecretFile string
	// Mode is events.ModeToken (GET /cgi-bin/token) or
	// events.ModeStableToken (POST /cgi-bin/stable_token); "" means
	// events.ModeToken.
	Mode string
}

// LogValue keeps the secret out of logs: only its fingerprint is shown.
func (a App) LogValue() slog.Value {
	attrs := []slog.Attr{slog.String("appid", a.AppID), slog.String("mode", a.mode())}
	if a.Secret != "" {
		attrs = append(attrs, slog.String("secret_fingerprint", wechat.Fingerprint(a.Secret)))
	}
	if a.SecretFile != "" {
		attrs = append(attrs, slog.String("secret_file", a.SecretFile))
	}
	return slog.GroupValue(attrs...)
}

// String is the appid and mode; never the secret.
func (a App) String() string { return a.AppID + " (" + a.mode() + ")" }

func (a App) mode() string {
	if a.Mode == "" {
		return events.ModeToken
	}
	return a.Mode
}

// LoadSecret returns Secret, or the trimmed content of SecretFile when
// Secret is empty. Errors name the appid and the file, never the content.
func (a App) LoadSecret() (string, error) {
	if a.Secret != "" {
		return a.Secret, nil
	}
	if a.SecretFile == "" {
		return "", fmt.Errorf("holder: app %s: no secret (set secret or secret_file)", a.AppID)
	}
	b, err := os.ReadFile(a.SecretFile)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err // the path is named below, the content never
		}
		return "", fmt.Errorf("holder: app %s: read secret_file %s: %w", a.AppID, a.SecretFile, err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("holder: app %s: secret_file %s is empty", a.AppID, a.SecretFile)
	}
	return s, nil
}

// Validate checks the app without reading SecretFile.
func (a App) Validate() error {
	if a.AppID == "" {
		return errors.New("holder: app: appid is required")
	}
	for _, r := range a.AppID {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return fmt.Errorf("holder: app %q: appid may only hold letters, digits, '_' and '-'", a.AppID)
		}
	}
	if a.Secret != "" && a.SecretFile != "" {
		return fmt.Errorf("holder: app %s: set secret or secret_file, not both", a.AppID)
	}
	if a.Secret == "" && a.SecretFile == "" {
		return fmt.Errorf("holder: app %s: no secret (set secret or secret_file)", a.AppID)
	}
	switch a.Mode {
	case "", events.ModeToken, events.ModeStableToken:
	default:
		return fmt.Errorf("holder: app %s: mode %q: want %q or %q", a.AppID, a.Mode, events.ModeToken, events.ModeStableToken)
	}
	return nil
}

// Config configures a Holder. Conn, WeChat and Apps are required; every
// other zero field means the default named in its comment.
type Config struct {
	// Conn is the NATS connection; the streams and buckets of package
	// events must exist (broker.Provision).
	Conn *nats.Conn
	// WeChat calls the token endpoints.
	WeChat *wechat.Client
	// Apps to keep tokens for; appids must be unique.
	Apps []App
	// ID names this holder in wx_leases and in token records; "" means
	// hostname-pid-random.
	ID string
	// Prefix of every subject (see events.NewSubjects); "" means none.
	Prefix string
	// LeaseTTL is how long leadership lasts without renewal; the leader
	// renews every LeaseTTL/3 and a standby takes over within LeaseTTL of
	// the leader's death. 0 means 10 s; at least 1 s.
	LeaseTTL time.Duration
	// RefreshMargin: a scheduled refresh happens this long (plus jitter)
	// before the token expires; a stored token with less left is not
	// adopted. 0 means 10 min. stable_token apps use at most 4 min, see the
	// package doc.
	RefreshMargin time.Duration
	// Jitter is the upper bound of a random extra margin per token, so that
	// many apps do not refresh at the same instant. 0 means 2 min; negative
	// means none.
	Jitter time.Duration
	// MinForceInterval is the minimum time between two forced refreshes
	// (invalidations, manual) of one appid. 0 means 30 s. stable_token apps
	// use at least 30 s (WeChat's limit).
	MinForceInterval time.Duration
	// ConflictWindow: reports against a token that we fetched because of
	// an earlier report, less than ConflictWindow ago, mean another system
	// fetches tokens for this appid: token.conflict, no refetch. 0 means
	// 10 min (twice the 5 min WeChat keeps a replaced token working).
	ConflictWindow time.Duration
	// QuotaDailyLimit is WeChat's daily /cgi-bin/token limit per appid.
	// 0 means 2000.
	QuotaDailyLimit int
	// QuotaReserve: once fewer than this many fetches are left today,
	// forced refreshes stop and only scheduled ones go on. 0 means 200;
	// negative means no reserve.
	QuotaReserve int
	// Now is the clock for token lifetimes and the China day (what WeChat
	// measures). nil means time.Now. Leases and retry spacing always use
	// real time.
	Now func() time.Time
	// CheckInterval is how often each app's loop re-evaluates time-based
	// decisions (is a refresh due, may a retry start). 0 means 1 s.
	CheckInterval time.Duration
	// RetryInitial and RetryMax bound the exponential backoff (real time)
	// between failed fetches (-1, network, 45009 after the day turned).
	// 0 means 1 s and 5 min.
	RetryInitial, RetryMax time.Duration
	// ConfigRetryInterval spaces retries after configuration errors
	// (40013, 40125, 40164) and other permanent answers. 0 means 5 min.
	ConfigRetryInterval time.Duration
	// MaxClockSkew bounds this holder's clock (Now) against the NATS
	// server's, measured from JetStream message timestamps every
	// LeaseTTL: beyond it the holder refuses to lead (log line, metric
	// wxhub_holder_clock_offset_seconds, lockout clock_skew, /readyz).
	// 0 means 30 s; negative turns the check off (tests with a simulated
	// clock).
	MaxClockSkew time.Duration
	// Logger for the holder; nil means slog.Default().
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.ID == "" {
		c.ID = defaultID()
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = DefaultLeaseTTL
	}
	if c.RefreshMargin == 0 {
		c.RefreshMargin = DefaultRefreshMargin
	}
	if c.Jitter == 0 {
		c.Jitter = DefaultJitter
	} else if c.Jitter < 0 {
		c.Jitter = 0
	}
	if c.MinForceInterval == 0 {
		c.MinForceInterval = DefaultMinForceInterval
	}
	if c.ConflictWindow == 0 {
		c.ConflictWindow = DefaultConflictWindow
	}
	if c.QuotaDailyLimit == 0 {
		c.QuotaDailyLimit = DefaultQuotaDailyLimit
	}
	if c.QuotaReserve == 0 {
		c.QuotaReserve = DefaultQuotaReserve
	} else if c.QuotaReserve < 0 {
		c.QuotaReserve = 0
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.CheckInterval == 0 {
		c.CheckInterval = DefaultCheckInterval
	}
	if c.RetryInitial == 0 {
		c.RetryInitial = DefaultRetryInitial
	}
	if c.RetryMax == 0 {
		c.RetryMax = DefaultRetryMax
	}
	if c.ConfigRetryInterval == 0 {
		c.ConfigRetryInterval = DefaultConfigRetryInterval
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.MaxClockSkew == 0 {
		c.MaxClockSkew = DefaultMaxClockSkew
	}
}

// Validate reports the first configuration error, naming the field. It
// does not read secret files (New does).
func (c Config) Validate() error {
	if c.Conn == nil {
		return errors.New("holder: Conn is required")
	}
	if c.WeChat == nil {
		return errors.New("holder: WeChat client is required")
	}
	if len(c.Apps) == 0 {
		return errors.New("holder: at least one app is required")
	}
	seen := map[string]bool{}
	for _, a := range c.Apps {
		if err := a.Validate(); err != nil {
			return err
		}
		if seen[a.AppID] {
			return fmt.Errorf("holder: app %s configured twice", a.AppID)
		}
		seen[a.AppID] = true
	}
	if strings.ContainsAny(c.ID, " \t\r\n") {
		return fmt.Errorf("holder: ID %q must not contain whitespace", c.ID)
	}
	switch {
	case c.LeaseTTL != 0 && c.LeaseTTL < time.Second:
		return fmt.Errorf("holder: LeaseTTL %v: want at least 1s", c.LeaseTTL)
	case c.RefreshMargin < 0:
		return fmt.Errorf("holder: RefreshMargin %v: must not be negative", c.RefreshMargin)
	case c.MinForceInterval < 0:
		return fmt.Errorf("holder: MinForceInterval %v: must not be negative", c.MinForceInterval)
	case c.ConflictWindow < 0:
		return fmt.Errorf("holder: ConflictWindow %v: must not be negative", c.ConflictWindow)
	case c.QuotaDailyLimit < 0:
		return fmt.Errorf("holder: QuotaDailyLimit %d: must not be negative", c.QuotaDailyLimit)
	case c.QuotaDailyLimit > 0 && c.QuotaReserve >= c.QuotaDailyLimit:
		return fmt.Errorf("holder: QuotaReserve %d: must be below QuotaDailyLimit %d", c.QuotaReserve, c.QuotaDailyLimit)
	case c.CheckInterval < 0, c.RetryInitial < 0, c.RetryMax < 0, c.ConfigRetryInterval < 0:
		return errors.New("holder: CheckInterval, RetryInitial, RetryMax and ConfigRetryInterval must not be negative")
	case c.RetryMax != 0 && c.RetryInitial > c.RetryMax:
		return fmt.Errorf("holder: RetryInitial %v exceeds RetryMax %v", c.RetryInitial, c.RetryMax)
	}
	return nil
}

func defaultID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "holder"
	}
	host = strings.Map(func(r rune) rune {
		if r == ' ' || r == '\t' || r == '\n' || r == '\r' {
			return '-'
		}
		return r
	}, host)
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}
