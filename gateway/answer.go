package gateway

import (
	"errors"
	"net/http"
	"os"
	"time"
)

// The writing of a relayed answer is bounded (AnswerTimeout), not the
// whole request: the server has no WriteTimeout, which would count the
// token wait, the body and WeChat's time too and cut honest slow calls.
// Without a bound, a client that asks for a large download and stops
// reading holds its connection, the handler and WeChat's connection
// without end, and past the drain on SIGTERM.

// answerTimeoutLabel is the errcode label of a call whose answer the
// client did not read within its bound (answerDeadline).
const answerTimeoutLabel = "answer_timeout"

// clientGoneLabel is the errcode label of a relayed call that failed on
// the client's side: the client went away (closed or reset its
// connection, or cancelled its request) before its answer was written.
// Never "transport", which says WeChat could not be reached and which
// the WxhubGatewayWeChatUnreachable alert watches: any client could fire
// it by hanging up.
const clientGoneLabel = "client_gone"

// answerSlack is left, at the end of the drain, between the cut of an
// unread answer and the drain's end: for the handler to end and the
// server to close the connection.
const answerSlack = time.Second

// answerDeadline is when an answer starting at now, to a request that
// came in at start, must be written by: AnswerTimeout from now, and
// never later than the drain allows. A request may come in up to
// HeaderTimeout after the drain began (its headers were on their way),
// so an answer written by DrainTimeout − HeaderTimeout − answerSlack
// after its request came in ends within any drain. With the defaults
// that is 104 s, so the cap only bites an answer that starts after its
// call took more than 44 s (a slow body and a slow WeChat).
func (g *Gateway) answerDeadline(start, now time.Time) time.Time {
	d := now.Add(g.cfg.AnswerTimeout)
	if last := start.Add(g.cfg.DrainTimeout - HeaderTimeout - answerSlack); last.Before(d) {
		return last
	}
	return d
}

// answerWriter is what the relay writes an answer through: it sets the
// connection's write deadline (answerDeadline) when the answer starts,
// before its headers are written, and keeps the first write error, so
// that an answer cut because the client did not read it in time is told
// apart from one cut because WeChat went away. The server lifts the
// deadline once the answer is done (a kept-alive connection's next
// request is not bounded by it).
type answerWriter struct {
	http.ResponseWriter
	g       *Gateway
	start   time.Time // the request came in
	started bool
	written int64
	err     error
}

func (w *answerWriter) begin() {
	if !w.started {
		w.started = true
		// Not supported (a Handler mounted on a server whose writer has
		// no deadline): the answer is unbounded there, as before.
		_ = http.NewResponseController(w.ResponseWriter).SetWriteDeadline(w.g.answerDeadline(w.start, time.Now()))
	}
}

// WriteHeader drops informational answers (1xx: 103 Early Hints, 102).
// ReverseProxy passes each one on as the upstream sent it, from its
// httptrace Got1xxResponse hook, while retryTransport's RoundTrip is
// still running: before and outside the status checks and the scrub of
// final answers, so a 103 echoing the URL would hand the real token to
// the client. WeChat's API sends none (it is no browser's page to
// preload for), so a 1xx comes from something in between, like the
// non-2xx answers the relay replaces by -1; SDKs make no use of them.
// The proxy clears the headers it copied for it. Nor does a 1xx start
// the answer's deadline: the final answer does.
func (w *answerWriter) WriteHeader(code int) {
	if code >= 100 && code <= 199 {
		return
	}
	w.begin()
	w.ResponseWriter.WriteHeader(code)
}

func (w *answerWriter) Write(p []byte) (int, error) {
	w.begin()
	n, err := w.ResponseWriter.Write(p)
	w.written += int64(n)
	if err != nil && w.err == nil {
		w.err = err
	}
	return n, err
}

// Unwrap lets http.ResponseController (the proxy's flushes) reach the
// server's writer.
func (w *answerWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// timedOut reports whether the answer was cut by its deadline.
func (w *answerWriter) timedOut() bool { return errors.Is(w.err, os.ErrDeadlineExceeded) }

// failedWrite reports whether a write to the client's connection failed
// for another reason than its deadline: the client closed or reset it.
// net/http's own refusals (a body where none is allowed, more than the
// announced length) are the gateway's doing, not the client's.
func (w *answerWriter) failedWrite() bool {
	return w.err != nil && !w.timedOut() &&
		!errors.Is(w.err, http.ErrBodyNotAllowed) && !errors.Is(w.err, http.ErrContentLength)
}
