package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/wxhub/wxhub/wechat"
	"github.com/wxhub/wxhub/wechat/wechatsim"
)

// SimServer serves a wechatsim.Sim on a loopback port. Besides the plain
// API under URL, it answers under URL/w<N>/ (WorkerURL) the same API with
// the prefix stripped: give worker N that base URL and every call can be
// attributed to it. It also records each access_token the simulator issues
// on /cgi-bin/token and, per worker, the first user/info call that carried
// it (tokens are kept only as fingerprints).
type SimServer struct {
	Sim *wechatsim.Sim
	URL string

	srv *http.Server
	ln  net.Listener

	mu       sync.Mutex
	issued   []TokenIssue
	firstUse map[string]map[int]time.Time // token fingerprint → worker → first use
}

// TokenIssue is one new token answered by /cgi-bin/token.
type TokenIssue struct {
	At time.Time // when the answer was written (harness clock)
	FP string    // wechat.Fingerprint of the token
}

// StartSim starts a simulator built with opts on 127.0.0.1 (a free port).
func StartSim(opts ...wechatsim.Option) (*SimServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("harness: sim listen: %w", err)
	}
	s := &SimServer{Sim: wechatsim.New(opts...), URL: "http://" + ln.Addr().String(), ln: ln, firstUse: map[string]map[int]time.Time{}}
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: 2 * time.Minute}
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

// WorkerURL is the base URL to give worker n (n >= 0).
func (s *SimServer) WorkerURL(n int) string { return s.URL + "/w" + strconv.Itoa(n) }

// Close stops serving (in-flight requests get 5 s).
func (s *SimServer) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		_ = s.srv.Close()
	}
}

// ServeHTTP routes /w<N>/... to the simulator with the prefix stripped.
func (s *SimServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	worker := -1
	if rest, ok := strings.CutPrefix(r.URL.Path, "/w"); ok {
		if i := strings.IndexByte(rest, '/'); i > 0 {
			if n, err := strconv.Atoi(rest[:i]); err == nil && n >= 0 {
				worker = n
				r2 := r.Clone(r.Context())
				r2.URL.Path = rest[i:]
				r2.URL.RawPath = ""
				r = r2
			}
		}
	}
	switch {
	case r.URL.Path == wechatsim.PathToken:
		rec := &captureWriter{ResponseWriter: w}
		s.Sim.ServeHTTP(rec, r)
		var ans struct {
			AccessToken string `json:"access_token"`
		}
		if json.Unmarshal(rec.buf.Bytes(), &ans) == nil && ans.AccessToken != "" {
			s.mu.Lock()
			s.issued = append(s.issued, TokenIssue{At: time.Now(), FP: wechat.Fingerprint(ans.AccessToken)})
			s.mu.Unlock()
		}
		return
	case worker >= 0 && r.URL.Path == wechatsim.PathUserInfo:
		if tok := r.URL.Query().Get("access_token"); tok != "" {
			fp := wechat.Fingerprint(tok)
			now := time.Now()
			s.mu.Lock()
			m := s.firstUse[fp]
			if m == nil {
				m = map[int]time.Time{}
				s.firstUse[fp] = m
			}
			if _, seen := m[worker]; !seen {
				m[worker] = now
			}
			s.mu.Unlock()
		}
	}
	s.Sim.ServeHTTP(w, r)
}

// Issued returns the tokens issued on /cgi-bin/token so far, oldest first.
func (s *SimServer) Issued() []TokenIssue {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]TokenIssue(nil), s.issued...)
}

// FirstUse returns, per worker, when it first called user/info with the
// token whose fingerprint is fp.
func (s *SimServer) FirstUse(fp string) map[int]time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[int]time.Time, len(s.firstUse[fp]))
	for w, t := range s.firstUse[fp] {
		out[w] = t
	}
	return out
}

// TokenCalls returns how many /cgi-bin/token calls the simulator answered
// for appid.
func (s *SimServer) TokenCalls(appid string) int64 {
	return s.Sim.Stats().CallCount(wechatsim.PathToken, appid)
}

// captureWriter copies the body of a (small) answer while writing it.
type captureWriter struct {
	http.ResponseWriter
	buf bytes.Buffer
}

func (c *captureWriter) Write(b []byte) (int, error) {
	if c.buf.Len() < 64<<10 {
		c.buf.Write(b)
	}
	return c.ResponseWriter.Write(b)
}
