package gateway

import (
	"testing"
	"time"
)

// An answer must be written within AnswerTimeout from its start, and
// never later than DrainTimeout − HeaderTimeout − answerSlack after its
// request came in, so that it ends within a drain that began up to
// HeaderTimeout before the request came in.
func TestAnswerDeadline(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name          string
		answer, drain time.Duration
		after         time.Duration // the answer starts this long after the request came in
		want          time.Duration // the deadline, after the request came in
	}{
		{"defaults, a quick call", DefaultAnswerTimeout, 115 * time.Second, time.Second, 61 * time.Second},
		{"defaults, the cap just not reached", DefaultAnswerTimeout, 115 * time.Second, 44 * time.Second, 104 * time.Second},
		{"defaults, a slow body and a slow WeChat", DefaultAnswerTimeout, 115 * time.Second, 90 * time.Second, 104 * time.Second},
		{"a longer drain leaves the bound whole", DefaultAnswerTimeout, 10 * time.Minute, 90 * time.Second, 150 * time.Second},
		{"a short bound", time.Second, 115 * time.Second, 0, time.Second},
	}
	for _, tt := range tests {
		g := &Gateway{cfg: Config{AnswerTimeout: tt.answer, DrainTimeout: tt.drain}}
		if got := g.answerDeadline(start, start.Add(tt.after)).Sub(start); got != tt.want {
			t.Errorf("%s: deadline %v after the request, want %v", tt.name, got, tt.want)
		}
	}
}
