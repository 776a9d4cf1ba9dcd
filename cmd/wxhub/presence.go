package main

import (
	"context"
	"encoding/json"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/holder"
	"github.com/wxhub/wxhub/worker"
)

// The presence protocol: `wxhub status` sends one request on
// <prefix>wxhub.status and gathers the replies of every running holder and
// worker process for a short while (scatter-gather). It carries no secret.
const statusSubject = events.SubjectStatus

// presenceWait is how long a command gathers the replies by default.
const presenceWait = 500 * time.Millisecond

// processStatus is one process's reply.
type processStatus struct {
	Role     string   `json:"role"`
	ID       string   `json:"id"`
	InFlight *int     `json:"in_flight,omitempty"`
	Handled  *int64   `json:"handled,omitempty"`
	Leads    []string `json:"leads,omitempty"`
	// Lockouts per appid, as this holder sees them (holders only).
	Lockouts map[string][]holder.Lockout `json:"lockouts,omitempty"`
	// Apps are the apps this holder is configured with, led or not
	// (holders only): how status lists an app that has no token yet.
	Apps  []presenceApp   `json:"apps,omitempty"`
	Stats json.RawMessage `json:"stats,omitempty"`
}

// presenceApp is one app of a holder's reply. It carries no secret.
type presenceApp struct {
	AppID  string `json:"appid"`
	Mode   string `json:"mode"`
	Leader bool   `json:"leader,omitempty"`
	// QuotaLimit and QuotaReserve: the holder's daily /cgi-bin/token
	// limit and reserve (token mode apps; absent for stable_token).
	QuotaLimit   int `json:"quota_limit,omitempty"`
	QuotaReserve int `json:"quota_reserve,omitempty"`
}

// app returns the holder's entry for appid, or nil.
func (p *processStatus) app(appid string) *presenceApp {
	for i := range p.Apps {
		if p.Apps[i].AppID == appid {
			return &p.Apps[i]
		}
	}
	return nil
}

func workerPresence(w *worker.Worker) func() any {
	return func() any {
		n := w.InFlight()
		st := w.Stats()
		stats, _ := json.Marshal(st)
		return processStatus{Role: "worker", ID: w.ID(), InFlight: &n, Handled: &st.Deliveries, Stats: stats}
	}
}

func holderPresence(h *holder.Holder) func() any {
	return func() any {
		ps := processStatus{Role: "holder", ID: h.ID()}
		for _, a := range h.Status() {
			ps.Apps = append(ps.Apps, presenceApp{AppID: a.AppID, Mode: a.Mode, Leader: a.Leader,
				QuotaLimit: a.QuotaLimit, QuotaReserve: a.QuotaReserve})
			if a.Leader {
				ps.Leads = append(ps.Leads, a.AppID)
			}
			if len(a.Lockouts) > 0 {
				if ps.Lockouts == nil {
					ps.Lockouts = map[string][]holder.Lockout{}
				}
				ps.Lockouts[a.AppID] = a.Lockouts
			}
		}
		return ps
	}
}

// gatherStatus asks every holder and worker for its status and collects
// the replies that arrive within wait.
func gatherStatus(ctx context.Context, nc *nats.Conn, prefix string, wait time.Duration) ([]processStatus, error) {
	inbox := replyInbox(prefix)
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil, err
	}
	defer sub.Unsubscribe()
	if err := nc.PublishRequest(prefix+statusSubject, inbox, nil); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	var out []processStatus
	for {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			return out, nil // the gathering window is over
		}
		var ps processStatus
		if json.Unmarshal(m.Data, &ps) == nil {
			out = append(out, ps)
		}
	}
}

// replyInbox is a fresh reply subject, <prefix>wxhub.reply.<token>,
// instead of an _INBOX: holders, workers and gateways may publish there,
// but have no allow_responses (a grant that would let them answer any
// reply subject, $JS.API ones included).
func replyInbox(prefix string) string { return prefix + events.SubjectReply + "." + nuid.Next() }
