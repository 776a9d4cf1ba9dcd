package wechatsim

import (
	"strconv"
	"sync"
	"sync/atomic"
)

// Stats counts what the simulator answered since it started or since the
// last ResetStats.
type Stats struct {
	Calls        map[string]map[string]int64 `json:"calls"`         // endpoint path → appid ("" if unknown) → count
	TokensIssued map[string]int64            `json:"tokens_issued"` // appid → new tokens from /cgi-bin/token and stable_token
	ErrCodes     map[string]int64            `json:"errcodes"`      // "40001" → count, all endpoints
}

// CallCount returns how many calls of path concerned appid ("" for calls
// whose app was unknown).
func (st Stats) CallCount(path, appid string) int64 { return st.Calls[path][appid] }

// TotalCalls returns how many calls of path were answered, for every app.
func (st Stats) TotalCalls(path string) int64 {
	var n int64
	for _, c := range st.Calls[path] {
		n += c
	}
	return n
}

type statsState struct {
	unknown [numEndpoints]atomic.Int64

	mu       sync.Mutex
	tokens   map[string]int64
	errCodes map[int]int64
}

func (st *statsState) init() {
	st.tokens = make(map[string]int64)
	st.errCodes = make(map[int]int64)
}

func (st *statsState) tokenIssued(appid string) {
	st.mu.Lock()
	st.tokens[appid]++
	st.mu.Unlock()
}

func (st *statsState) errCode(code int) {
	st.mu.Lock()
	st.errCodes[code]++
	st.mu.Unlock()
}

func (s *Sim) countCall(i int, a *app) {
	if a != nil {
		a.calls[i].Add(1)
	} else {
		s.stats.unknown[i].Add(1)
	}
}

// Stats returns a snapshot of the counters.
func (s *Sim) Stats() Stats {
	out := Stats{Calls: make(map[string]map[string]int64), TokensIssued: make(map[string]int64), ErrCodes: make(map[string]int64)}
	add := func(i int, appid string, n int64) {
		if n == 0 {
			return
		}
		m := out.Calls[endpoints[i].path]
		if m == nil {
			m = make(map[string]int64)
			out.Calls[endpoints[i].path] = m
		}
		m[appid] += n
	}
	for i := range s.stats.unknown {
		add(i, "", s.stats.unknown[i].Load())
	}
	s.appsMu.RLock()
	for id, a := range s.apps {
		for i := range a.calls {
			add(i, id, a.calls[i].Load())
		}
	}
	s.appsMu.RUnlock()
	s.stats.mu.Lock()
	for id, n := range s.stats.tokens {
		out.TokensIssued[id] = n
	}
	for c, n := range s.stats.errCodes {
		out.ErrCodes[strconv.Itoa(c)] = n
	}
	s.stats.mu.Unlock()
	return out
}

// ResetStats sets every counter to zero.
func (s *Sim) ResetStats() {
	for i := range s.stats.unknown {
		s.stats.unknown[i].Store(0)
	}
	s.appsMu.RLock()
	for _, a := range s.apps {
		for i := range a.calls {
			a.calls[i].Store(0)
		}
	}
	s.appsMu.RUnlock()
	s.stats.mu.Lock()
	s.stats.init()
	s.stats.mu.Unlock()
}
