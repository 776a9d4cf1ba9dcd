package wechatsim

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// The admin API, JSON over HTTP under /_sim/. Bad input answers 400
// {"error":"..."}; a wrong method answers 405.
func (s *Sim) serveAdmin(w http.ResponseWriter, r *http.Request) {
	s.adminOnce.Do(func() { s.admin = s.adminMux() })
	s.admin.ServeHTTP(w, r)
}

func (s *Sim) adminMux() *http.ServeMux {
	m := http.NewServeMux()
	m.HandleFunc("POST /_sim/apps", s.adminAddApp)
	m.HandleFunc("POST /_sim/followers", s.adminAddFollower)
	m.HandleFunc("POST /_sim/codes", s.adminIssueCode)
	m.HandleFunc("POST /_sim/oauth/apps", s.adminOAuthApp)
	m.HandleFunc("POST /_sim/oauth/user", s.adminLogIn)
	m.HandleFunc("DELETE /_sim/oauth/user", func(w http.ResponseWriter, r *http.Request) {
		s.LogOut(r.URL.Query().Get("appid"))
		w.WriteHeader(http.StatusNoContent)
	})
	m.HandleFunc("POST /_sim/grants/revoke", s.adminRevokeGrant)
	m.HandleFunc("GET /_sim/faults", func(w http.ResponseWriter, r *http.Request) {
		adminJSON(w, http.StatusOK, struct {
			Faults []Fault `json:"faults"`
		}{s.Faults()})
	})
	m.HandleFunc("POST /_sim/faults", s.adminAddFault)
	m.HandleFunc("DELETE /_sim/faults", func(w http.ResponseWriter, r *http.Request) {
		s.ClearFaults()
		w.WriteHeader(http.StatusNoContent)
	})
	m.HandleFunc("GET /_sim/latency", func(w http.ResponseWriter, r *http.Request) {
		adminJSON(w, http.StatusOK, latencyBody{MS: s.Latency().Milliseconds()})
	})
	m.HandleFunc("POST /_sim/latency", s.adminSetLatency)
	m.HandleFunc("GET /_sim/stats", func(w http.ResponseWriter, r *http.Request) { adminJSON(w, http.StatusOK, s.Stats()) })
	m.HandleFunc("DELETE /_sim/stats", func(w http.ResponseWriter, r *http.Request) {
		s.ResetStats()
		w.WriteHeader(http.StatusNoContent)
	})
	m.HandleFunc("GET /_sim/clock", func(w http.ResponseWriter, r *http.Request) {
		adminJSON(w, http.StatusOK, clockBody{Now: s.clock.Now()})
	})
	m.HandleFunc("POST /_sim/clock", s.adminAdvanceClock)
	return m
}

type adminError struct {
	Error string `json:"error"`
}

type latencyBody struct {
	MS int64 `json:"ms"`
}

type clockBody struct {
	Now time.Time `json:"now"`
}

func adminJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"encoding the answer failed"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func badRequest(w http.ResponseWriter, err error) {
	msg := strings.TrimPrefix(err.Error(), "wechatsim: ")
	adminJSON(w, http.StatusBadRequest, adminError{Error: msg})
}

// decode reads one JSON object into v, refusing unknown fields and
// trailing data.
func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return errors.New("empty body: a JSON object is required")
		}
		return fmt.Errorf("bad JSON body: %w", err)
	}
	if dec.More() {
		return errors.New("bad JSON body: trailing data after the object")
	}
	return nil
}

type addAppBody struct {
	AppID           string `json:"appid"`
	Secret          string `json:"secret"`
	TokenDailyLimit *int   `json:"token_daily_limit"`
	Bound           *bool  `json:"bound_to_open_platform"`
	RefreshDays     *int   `json:"refresh_token_days"`
}

func (s *Sim) adminAddApp(w http.ResponseWriter, r *http.Request) {
	var b addAppBody
	if err := decode(r, &b); err != nil {
		badRequest(w, err)
		return
	}
	switch {
	case b.AppID == "":
		badRequest(w, errors.New("appid is required"))
		return
	case b.Secret == "":
		badRequest(w, errors.New("secret is required"))
		return
	case b.TokenDailyLimit != nil && *b.TokenDailyLimit < 0:
		badRequest(w, errors.New("token_daily_limit must not be negative"))
		return
	case b.RefreshDays != nil && *b.RefreshDays < 1:
		badRequest(w, errors.New("refresh_token_days must be at least 1"))
		return
	}
	s.AddApp(b.AppID, b.Secret)
	if b.TokenDailyLimit != nil {
		s.SetTokenDailyLimit(b.AppID, *b.TokenDailyLimit)
	}
	if b.Bound != nil {
		s.SetBoundToOpenPlatform(b.AppID, *b.Bound)
	}
	if b.RefreshDays != nil {
		_ = s.SetRefreshLifetime(b.AppID, time.Duration(*b.RefreshDays)*24*time.Hour)
	}
	adminJSON(w, http.StatusCreated, struct {
		AppID string `json:"appid"`
	}{b.AppID})
}

type addFollowerBody struct {
	AppID string `json:"appid"`
	// IsFollower false records an SNS-only user (see AddSNSUser).
	IsFollower *bool `json:"follower"`
	Follower
}

func (s *Sim) adminAddFollower(w http.ResponseWriter, r *http.Request) {
	var b addFollowerBody
	if err := decode(r, &b); err != nil {
		badRequest(w, err)
		return
	}
	if b.AppID == "" {
		badRequest(w, errors.New("appid is required"))
		return
	}
	var err error
	if b.IsFollower != nil && !*b.IsFollower {
		err = s.AddSNSUser(b.AppID, b.Follower)
	} else {
		err = s.AddFollower(b.AppID, b.Follower)
	}
	if err != nil {
		badRequest(w, err)
		return
	}
	adminJSON(w, http.StatusCreated, struct {
		AppID  string `json:"appid"`
		OpenID string `json:"openid"`
	}{b.AppID, b.OpenID})
}

func (s *Sim) adminIssueCode(w http.ResponseWriter, r *http.Request) {
	var b CodeRequest
	if err := decode(r, &b); err != nil {
		badRequest(w, err)
		return
	}
	c, err := s.IssueCodeWith(b)
	if err != nil {
		badRequest(w, err)
		return
	}
	adminJSON(w, http.StatusOK, struct {
		Code string `json:"code"`
	}{c})
}

func (s *Sim) adminAddFault(w http.ResponseWriter, r *http.Request) {
	var f Fault
	if err := decode(r, &f); err != nil {
		badRequest(w, err)
		return
	}
	if err := s.AddFault(f); err != nil {
		badRequest(w, err)
		return
	}
	adminJSON(w, http.StatusCreated, f)
}

func (s *Sim) adminSetLatency(w http.ResponseWriter, r *http.Request) {
	var b struct {
		MS *int64 `json:"ms"`
	}
	if err := decode(r, &b); err != nil {
		badRequest(w, err)
		return
	}
	if b.MS == nil || *b.MS < 0 {
		badRequest(w, errors.New("ms is required and must not be negative"))
		return
	}
	s.SetLatency(time.Duration(*b.MS) * time.Millisecond)
	adminJSON(w, http.StatusOK, latencyBody{MS: *b.MS})
}

func (s *Sim) adminAdvanceClock(w http.ResponseWriter, r *http.Request) {
	var b struct {
		AdvanceMS *int64 `json:"advance_ms"`
	}
	if err := decode(r, &b); err != nil {
		badRequest(w, err)
		return
	}
	if b.AdvanceMS == nil || *b.AdvanceMS < 0 {
		badRequest(w, errors.New("advance_ms is required and must not be negative"))
		return
	}
	mc, ok := s.clock.(*ManualClock)
	if !ok {
		adminJSON(w, http.StatusConflict, adminError{Error: "the simulator runs on the real clock; start it with a ManualClock to move time"})
		return
	}
	mc.Advance(time.Duration(*b.AdvanceMS) * time.Millisecond)
	adminJSON(w, http.StatusOK, clockBody{Now: mc.Now()})
}
