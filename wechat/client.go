package wechat

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// DefaultBaseURL is WeChat's production API host.
const DefaultBaseURL = "https://api.weixin.qq.com"

// maxBody bounds how much of an answer is read (WeChat's are a few KiB).
const maxBody = 4 << 20

// Config configures a Client. The zero value talks to DefaultBaseURL with
// a pooled HTTP client and a 10 s timeout per call.
type Config struct {
	// BaseURL of the API, e.g. the simulator's URL; "" means DefaultBaseURL.
	BaseURL string
	// HTTPClient to use; nil means NewHTTPClient(). Its Timeout should be
	// zero: the client bounds each call with Timeout through the context.
	HTTPClient *http.Client
	// Timeout bounds each call; 0 means 10 s.
	Timeout time.Duration
	// Observer, if set, is called after every call with the endpoint path,
	// the round-trip time and the error (nil on success). Use it for
	// metrics; it must be fast and safe for concurrent use.
	Observer func(endpoint string, d time.Duration, err error)
}

func (c *Config) setDefaults() {
	if c.BaseURL == "" {
		c.BaseURL = DefaultBaseURL
	}
	c.BaseURL = strings.TrimRight(c.BaseURL, "/")
	if c.HTTPClient == nil {
		c.HTTPClient = NewHTTPClient()
	}
	if c.Timeout <= 0 {
		c.Timeout = 10 * time.Second
	}
}

// Validate reports a configuration error.
func (c Config) Validate() error {
	u, err := url.Parse(c.BaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("wechat: base URL %q: want http(s)://host[:port]", c.BaseURL)
	}
	return nil
}

// NewHTTPClient returns an http.Client sized for many concurrent calls to
// one host: a large idle pool so connections are reused, bounded dial and
// TLS handshake times, and no redirects (WeChat's API never redirects).
func NewHTTPClient() *http.Client {
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   1024,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   5 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	return &http.Client{
		Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// Client calls the WeChat API. It is safe for concurrent use.
type Client struct {
	cfg Config
}

// NewClient returns a client for cfg.
func NewClient(cfg Config) (*Client, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Client{cfg: cfg}, nil
}

// BaseURL returns the API base URL the client calls.
func (c *Client) BaseURL() string { return c.cfg.BaseURL }

// Timeout returns the bound of each call (Config.Timeout).
func (c *Client) Timeout() time.Duration { return c.cfg.Timeout }

// status is the errcode/errmsg part every answer may carry.
type status struct {
	ErrCode int    `json:"errcode"`
	ErrMsg  string `json:"errmsg"`
}

func (s *status) apiStatus() *status { return s }

type withStatus interface{ apiStatus() *status }

// call performs one request (query: the encoded query string, or "") and
// decodes the JSON answer into out. secrets lists the values in the
// request that must never appear in an error.
func (c *Client) call(ctx context.Context, method, path, query string, body any, out withStatus, secrets ...string) (err error) {
	start := time.Now()
	if c.cfg.Observer != nil {
		defer func() { c.cfg.Observer(path, time.Since(start), err) }()
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()

	target := c.cfg.BaseURL + path + "?" + query // one allocation
	if query == "" {
		target = target[:len(target)-1]
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return &TransportError{Endpoint: path, Err: fmt.Errorf("encode request: %w", err)}
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, rd)
	if err != nil {
		// NewRequest errors quote the URL: never return them as they are.
		return &TransportError{Endpoint: path, Err: errors.New("invalid request URL")}
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.cfg.HTTPClient.Do(req)
	if err != nil {
		return transportErr(ctx, path, err, secrets)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return transportErr(ctx, path, err, secrets)
	}
	return decodeAnswer(path, resp.StatusCode, data, out, secrets)
}

// decodeAnswer turns an HTTP answer into out, an *APIError or a
// *TransportError. It never quotes the body (which may echo a secret).
func decodeAnswer(path string, status int, data []byte, out withStatus, secrets []string) error {
	if status != http.StatusOK {
		return &TransportError{Endpoint: path, StatusCode: status, Err: fmt.Errorf("unexpected answer (%d bytes)", len(data))}
	}
	if err := json.Unmarshal(data, out); err != nil {
		return &TransportError{Endpoint: path, StatusCode: status, Err: fmt.Errorf("answer is not the expected JSON (%d bytes): %s", len(data), jsonProblem(err))}
	}
	if st := out.apiStatus(); st.ErrCode != 0 {
		return &APIError{Endpoint: path, Code: st.ErrCode, Msg: scrub(st.ErrMsg, secrets)}
	}
	return nil
}

// jsonProblem describes a decoding error without quoting the payload.
func jsonProblem(err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("syntax error at offset %d", se.Offset)
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Sprintf("field %q: got JSON %s, want %s", te.Field, te.Value, te.Type)
	}
	return "invalid JSON"
}

// transportErr turns an http.Client error into a *TransportError without
// the URL (and so without the secrets in its query string).
func transportErr(ctx context.Context, path string, err error, secrets []string) error {
	te := &TransportError{Endpoint: path}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		te.Timeout = true
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err // drop Op and URL
	}
	switch {
	case ctx.Err() != nil:
		te.Timeout = te.Timeout || errors.Is(ctx.Err(), context.DeadlineExceeded)
		te.Err = ctx.Err()
	case containsAny(err.Error(), secrets):
		te.Err = errors.New(scrub(err.Error(), secrets))
	default:
		te.Err = err
	}
	return te
}

func containsAny(s string, secrets []string) bool {
	for _, v := range secrets {
		if v != "" && strings.Contains(s, v) {
			return true
		}
	}
	return false
}

func scrub(s string, secrets []string) string {
	for _, v := range secrets {
		if v != "" {
			s = strings.ReplaceAll(s, v, "[redacted]")
			if q := url.QueryEscape(v); q != v {
				s = strings.ReplaceAll(s, q, "[redacted]")
			}
		}
	}
	return s
}
