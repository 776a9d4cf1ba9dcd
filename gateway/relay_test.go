package gateway_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"mime/multipart"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/gateway"
	"github.com/wxhub/wxhub/wechat/wechatsim"
)

// TestBodiesPassUnchanged: a multipart media upload reaches WeChat byte
// for byte with its content type; a binary download comes back byte for
// byte with its headers; a body over the limit is refused.
func TestBodiesPassUnchanged(t *testing.T) {
	t.Parallel()
	e := startEnv(t, func(c *gateway.Config) { c.MaxRequestBody = 8 << 20 })
	hc := &http.Client{}
	h := get(t, hc, tokenURL(e.url, appA, keyShop)).AccessToken

	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	fw, _ := mw.CreateFormFile("media", "photo.jpg")
	upload := bytes.Repeat(mediaBytes[:1<<20], 5)
	upload[12345] ^= 0xff
	fw.Write(upload)
	mw.Close()
	sent := body.Bytes()
	resp, err := hc.Post(e.url+"/cgi-bin/media/upload?access_token="+h+"&type=image", mw.FormDataContentType(), bytes.NewReader(sent))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("upload answer %q", b)
	}
	if got["sha256"] != sha(sent) || int(got["size"].(float64)) != len(sent) || got["content_type"] != mw.FormDataContentType() || got["type"] != "image" {
		t.Fatalf("WeChat got another body: %v", got)
	}

	resp, err = hc.Get(e.url + "/cgi-bin/media/get?access_token=" + h + "&media_id=m1")
	if err != nil {
		t.Fatal(err)
	}
	dl, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Equal(dl, mediaBytes) || resp.Header.Get("Content-Type") != "image/jpeg" || !strings.Contains(resp.Header.Get("Content-Disposition"), "m.jpg") {
		t.Fatalf("download: %d bytes (want %d), type %q", len(dl), len(mediaBytes), resp.Header.Get("Content-Type"))
	}

	big := make([]byte, 9<<20)
	a := post(t, hc, e.url+"/cgi-bin/media/upload?access_token="+h+"&type=video", "application/octet-stream", string(big))
	if a.ErrCode != 45001 {
		t.Fatalf("over the limit: %s", a.raw)
	}
}

// TestTokenRejectedOnAPostIsRetriedOnce: a POST answered 40001 was not
// executed, so the gateway reports the token, waits for the next one and
// sends it again, once.
func TestTokenRejectedOnAPostIsRetriedOnce(t *testing.T) {
	t.Parallel()
	e := startEnv(t)
	hc := &http.Client{}
	h := get(t, hc, tokenURL(e.url, appA, keyShop)).AccessToken
	before, _ := e.tokens.Current(appA)
	e.sim.ResetStats()
	if err := e.sim.AddFault(wechatsim.Fault{Path: wechatsim.PathUserInfoBatch, ErrCode: 40001, Count: 1}); err != nil {
		t.Fatal(err)
	}
	a := post(t, hc, e.url+wechatsim.PathUserInfoBatch+"?access_token="+h, "application/json", `{"user_list":[{"openid":"`+openID+`"}]}`)
	if a.ErrCode != 0 || !strings.Contains(a.raw, openID) {
		t.Fatalf("POST after a 40001: %s", a.raw)
	}
	after, _ := e.tokens.Current(appA)
	if n := e.sim.Stats().CallCount(wechatsim.PathUserInfoBatch, appA); n != 2 || after.Version <= before.Version {
		t.Fatalf("WeChat got the POST %d times (want 2), token version %d → %d", n, before.Version, after.Version)
	}
	// The old handle still works: it names the client and app, and the
	// call goes out with the current token.
	if a := get(t, hc, e.url+wechatsim.PathUserInfo+"?access_token="+h+"&openid="+openID); a.ErrCode != 0 {
		t.Fatalf("old handle after the rotation: %s", a.raw)
	}
	if strings.Contains(e.logs.String(), h) {
		t.Error("the logs contain a handle")
	}
	if !strings.Contains(e.logs.String(), `access_token=%5Bredacted%5D`) {
		t.Error("the debug log shows no scrubbed query")
	}
}

// staleOnce is the gateway's Tokens, which hands out rec for app once
// when armed: a call that took rec as the holder replaced it.
type staleOnce struct {
	gateway.Tokens
	mu  sync.Mutex
	app string
	rec *events.TokenRecord
}

func (s *staleOnce) arm(app string, rec events.TokenRecord) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.app, s.rec = app, &rec
}

func (s *staleOnce) Current(appid string) (events.TokenRecord, bool) {
	s.mu.Lock()
	if rec := s.rec; rec != nil && appid == s.app {
		s.rec = nil
		s.mu.Unlock()
		return *rec, true
	}
	s.mu.Unlock()
	return s.Tokens.Current(appid)
}

// TestRejectedTokenAlreadyReplacedIsNotReported: a call went out with a
// token the holder replaced while it was in flight. WeChat's 40001 for it
// is not reported (the report would be stale: a token.invalidated event
// for nothing) and the call is repeated at once with the token held.
func TestRejectedTokenAlreadyReplacedIsNotReported(t *testing.T) {
	t.Parallel()
	spy := &reportSpy{}
	stale := &staleOnce{}
	e := startEnv(t, withReportSpy(spy), func(c *gateway.Config) { stale.Tokens, c.Tokens = c.Tokens, stale })
	hc := &http.Client{}
	h := get(t, hc, tokenURL(e.url, appA, keyShop)).AccessToken
	old, _ := e.tokens.Current(appA)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.holder.Refresh(ctx, appA); err != nil {
		t.Fatal(err)
	}
	held, err := e.tokens.WaitNewer(ctx, appA, old.Version)
	if err != nil {
		t.Fatal(err)
	}
	e.sim.ResetStats()
	if err := e.sim.AddFault(wechatsim.Fault{Path: wechatsim.PathUserInfo, ErrCode: 40001, Count: 1}); err != nil {
		t.Fatal(err)
	}
	stale.arm(appA, old)
	a := get(t, hc, e.url+wechatsim.PathUserInfo+"?access_token="+h+"&openid="+openID)
	if a.ErrCode != 0 || !strings.Contains(a.raw, openID) {
		t.Fatalf("call after a 40001 for a replaced token: %s", a.raw)
	}
	if n := e.sim.Stats().CallCount(wechatsim.PathUserInfo, appA); n != 2 {
		t.Fatalf("WeChat got the call %d times, want 2", n)
	}
	if n := spy.reports(); n != 0 {
		t.Fatalf("%d token.invalidated reports for version %d, replaced by %d already; want none", n, old.Version, held.Version)
	}
	if !strings.Contains(e.logs.String(), "a newer one is held already") {
		t.Error("no log line says why the rejection was not reported")
	}
}

// TestStableTokenEndpoint: POST /cgi-bin/stable_token answers like
// /cgi-bin/token and never fetches, also with force_refresh.
func TestStableTokenEndpoint(t *testing.T) {
	t.Parallel()
	e := startEnv(t)
	hc := &http.Client{}
	e.sim.ResetStats()
	a := post(t, hc, e.url+"/cgi-bin/stable_token", "application/json",
		`{"grant_type":"client_credential","appid":"`+appB+`","secret":"`+keyShop+`","force_refresh":true}`)
	if a.ErrCode != 0 || !strings.HasPrefix(a.AccessToken, "wxh1_") || a.ExpiresIn < 7000 {
		t.Fatalf("stable_token: %s", a.raw)
	}
	if g := get(t, hc, tokenURL(e.url, appB, keyShop)); g.AccessToken != a.AccessToken {
		t.Fatalf("token and stable_token gave different handles")
	}
	st := e.sim.Stats()
	if n := st.TotalCalls(wechatsim.PathToken) + st.TotalCalls(wechatsim.PathStableToken); n != 0 {
		t.Fatalf("%d WeChat token fetches", n)
	}
}

// TestTLS: with a certificate the front speaks HTTPS.
func TestTLS(t *testing.T) {
	t.Parallel()
	certFile, keyFile, pool := selfSigned(t)
	e := startEnv(t, func(c *gateway.Config) { c.TLSCert, c.TLSKey = certFile, keyFile })
	if !strings.HasPrefix(e.url, "https://") {
		t.Fatalf("URL %s", e.url)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	if a := get(t, hc, tokenURL(e.url, appA, keyShop)); a.ErrCode != 0 || a.AccessToken == "" {
		t.Fatalf("over TLS: %s", a.raw)
	}
	if resp, err := http.Get(strings.Replace(e.url, "https://", "http://", 1) + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Fatal("plain HTTP answered on the TLS front")
		}
	}
}

// TestShutdownDrainsInFlightCalls: on stop, a call WeChat is still
// answering completes; then the front is closed.
func TestShutdownDrainsInFlightCalls(t *testing.T) {
	t.Parallel()
	arrived := make(chan struct{}, 1)
	e := startEnvWith(t, arrived)
	hc := &http.Client{}
	h := get(t, hc, tokenURL(e.url, appA, keyShop)).AccessToken
	if err := e.sim.AddFault(wechatsim.Fault{Path: wechatsim.PathUserInfo, DelayMS: 700, Count: 1}); err != nil {
		t.Fatal(err)
	}
	res := make(chan wxAnswer, 1)
	go func() { res <- get(t, hc, e.url+wechatsim.PathUserInfo+"?access_token="+h+"&openid="+openID) }()
	select {
	case <-arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("the call never reached WeChat")
	}
	e.stop()
	select {
	case a := <-res:
		if a.ErrCode != 0 || a.OpenID != openID {
			t.Fatalf("in-flight call after stop: %s", a.raw)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("in-flight call did not finish")
	}
	if err := <-e.stopped; err != nil {
		t.Fatalf("Run: %v", err)
	}
	e.stopped <- nil // for the cleanup
	if c, err := net.DialTimeout("tcp", strings.TrimPrefix(e.url, "http://"), time.Second); err == nil {
		c.Close()
		t.Fatal("the front still accepts connections after Run returned")
	}
}

// TestReadyWhenEveryAppHasAToken: /readyz on the front says which app
// lacks a token.
func TestReadyWhenEveryAppHasAToken(t *testing.T) {
	t.Parallel()
	e := startEnv(t, func(c *gateway.Config) {
		c.Apps = append(c.Apps, gateway.App{AppID: "wxnoholderapp0001"})
	})
	if err := e.gw.Ready(); err == nil {
		t.Fatal("ready without a token for every app")
	}
	resp, err := http.Get(e.url + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || !strings.Contains(string(b), "wxnoholderapp0001") || strings.Contains(string(b), appA) {
		t.Fatalf("readyz %d %s", resp.StatusCode, b)
	}
}

func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	c := newTestCert(t, "wxhub gateway test")
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, c.certPEM, 0o600)
	os.WriteFile(keyFile, c.keyPEM, 0o600)
	pool = x509.NewCertPool()
	pool.AddCert(c.cert)
	return certFile, keyFile, pool
}

// testCert is a self-signed server certificate for 127.0.0.1 and its
// key, in PEM.
type testCert struct {
	certPEM, keyPEM []byte
	cert            *x509.Certificate
}

func newTestCert(t *testing.T, cn string) testCert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	cert, _ := x509.ParseCertificate(der)
	return testCert{certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM: pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), cert: cert}
}
