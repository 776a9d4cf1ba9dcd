package weblogin

import (
	"net/http/httptest"
	"testing"
)

// return_to's own query comes back byte for byte, in its order; only
// parameters named wxhub_job, state or error are replaced, and ours are
// appended.
func TestFinishKeepsReturnToQueryByteForByte(t *testing.T) {
	t.Parallel()
	const base = "https://shop.example.com/login/"
	cases := []struct {
		returnTo, state, job, errKind, want string
	}{
		{base, "S", "weblogin-j", "", base + "?wxhub_job=weblogin-j&state=S"},
		{base + "?a=1;b=2&c=3", "S", "weblogin-j", "", base + "?a=1;b=2&c=3&wxhub_job=weblogin-j&state=S"},
		{base + "?flag&z=1&a=x+y", "S", "weblogin-j", "", base + "?flag&z=1&a=x+y&wxhub_job=weblogin-j&state=S"},
		{base + "?next=%2Fcart&b=%7e", "", "weblogin-j", "", base + "?next=%2Fcart&b=%7e&wxhub_job=weblogin-j"},
		{base + "?z=9&state=old&wxhub_job=forged&error=x&a=1", "S", "", "access_denied", base + "?z=9&a=1&state=S&error=access_denied"},
		{base + "?st%61te=old&k=1;state=old;m=2&error", "S", "weblogin-j", "", base + "?k=1;m=2&wxhub_job=weblogin-j&state=S"},
		{base + "?", "", "", "timeout", base + "?error=timeout"},
		{base + "?x=1#frag", "a b&c", "weblogin-j", "", base + "?x=1&wxhub_job=weblogin-j&state=a+b%26c#frag"},
	}
	h := &Handler{}
	for _, c := range cases {
		w := httptest.NewRecorder()
		h.finish(w, httptest.NewRequest("GET", "/oauth/callback", nil), State{ReturnTo: c.returnTo, State: c.state}, c.job, c.errKind)
		if got := w.Header().Get("Location"); got != c.want {
			t.Errorf("return_to %s:\n got %s\nwant %s", c.returnTo, got, c.want)
		}
	}
}
