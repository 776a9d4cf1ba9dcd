package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/broker"
	"github.com/wxhub/wxhub/broker/grants"
	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/holder"
	"github.com/wxhub/wxhub/internal/config"
)

func cmdStatus(ctx context.Context, env *cmdEnv, args []string) error {
	var asJSON bool
	var wait time.Duration
	cfg, _, err := parseConfig(env, "status", config.FlagsNATS, args, func(fs *flag.FlagSet) {
		fs.BoolVar(&asJSON, "json", false, "print JSON")
		fs.DurationVar(&wait, "wait", presenceWait, "how long to gather replies from running holders and workers")
	})
	if err != nil {
		return err
	}
	nc, js, err := connectAs(cfg, "wxhub-cli", grants.Provision)
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	procs, err := gatherStatus(ctx, nc, cfg.Prefix, wait)
	if err != nil {
		return err
	}
	st, err := collectStatus(ctx, js, procs)
	if err != nil {
		return err
	}
	mergeLockouts(&st)
	sort.Slice(st.Processes, func(i, k int) bool {
		a, b := st.Processes[i], st.Processes[k]
		return a.Role < b.Role || a.Role == b.Role && a.ID < b.ID
	})
	workers := 0
	for _, p := range st.Processes {
		if p.Role == "worker" {
			workers++
		}
	}
	for i := range st.Jobs {
		st.Jobs[i].Workers = workers
	}
	if asJSON {
		out, _ := json.MarshalIndent(st, "", "  ")
		fmt.Fprintln(env.stdout, string(out))
		return nil
	}
	tw := tabwriter.NewWriter(env.stdout, 2, 4, 2, ' ', 0)
	printApps(tw, st.Apps)
	fmt.Fprintln(tw, "JOB SUBJECT\tCONSUMER\tPENDING\tIN FLIGHT\tREDELIVERED\tWORKERS\tWAITING PULLS")
	for _, j := range st.Jobs {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\n", j.Subject, j.Consumer, j.Pending, j.InFlight, j.Redelivered, j.Workers, j.WaitingPulls)
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "PROCESS\tID\tIN FLIGHT\tJOBS HANDLED\tLEADS")
	for _, p := range st.Processes {
		inflight, handled := "-", "-"
		if p.InFlight != nil {
			inflight = strconv.Itoa(*p.InFlight)
		}
		if p.Handled != nil {
			handled = strconv.FormatInt(*p.Handled, 10)
		}
		leads := "-"
		if len(p.Leads) > 0 {
			leads = strings.Join(p.Leads, ",")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", p.Role, p.ID, inflight, handled, leads)
	}
	return tw.Flush()
}

type appStatus struct {
	AppID string `json:"appid"`
	// Version is 0, and ExpiresAt and ExpiresIn are absent, when
	// wx_tokens holds no token for the app (a holder is configured with
	// it, but its first fetch has not succeeded: see Lockouts).
	Version      uint64    `json:"version"`
	Mode         string    `json:"mode"`
	ExpiresAt    time.Time `json:"expires_at,omitzero"`
	ExpiresIn    string    `json:"expires_in,omitempty"`
	FetchesToday int       `json:"fetches_today"`
	// QuotaLimit, QuotaReserve and QuotaLeft (token mode): the daily
	// /cgi-bin/token limit and reserve the leading holder (else any
	// answering holder configured with the app) reports, and the limit
	// minus FetchesToday; absent when no such holder answers.
	QuotaLimit   *int `json:"quota_limit,omitempty"`
	QuotaReserve *int `json:"quota_reserve,omitempty"`
	QuotaLeft    *int `json:"quota_left,omitempty"`
	// ForcedToday and ForcedLeft (stable_token mode): today's
	// force_refresh calls (wx_quota) and those left of WeChat's 20.
	ForcedToday *int   `json:"forced_today,omitempty"`
	ForcedLeft  *int   `json:"forced_left,omitempty"`
	Leader      string `json:"leader"`
	// Lockouts: what stops refreshes of the app now (the leading
	// holder's view; not_leading when no holder holds the lease).
	Lockouts []holder.Lockout `json:"lockouts"`
}

// printApps prints the app table, then each lockout's detail on a line
// of its own ("appid: state until ...: detail").
func printApps(tw *tabwriter.Writer, apps []appStatus) {
	fmt.Fprintln(tw, "APPID\tVERSION\tMODE\tEXPIRES IN\tFETCHES TODAY\tQUOTA LEFT\tLEADER\tLOCKOUTS")
	for _, a := range apps {
		version := "-"
		if a.Version > 0 {
			version = strconv.FormatUint(a.Version, 10)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", a.AppID, version, a.Mode, orDash(a.ExpiresIn), a.FetchesToday, quotaCell(a), a.Leader, lockoutSummary(a.Lockouts))
	}
	fmt.Fprintln(tw)
	details := false
	for _, a := range apps {
		for _, l := range a.Lockouts {
			fmt.Fprintf(tw, "%s: %s\n", a.AppID, l)
			details = true
		}
	}
	if details {
		fmt.Fprintln(tw)
	}
}

type jobStatus struct {
	Subject      string `json:"subject"`
	Consumer     string `json:"consumer"`
	Pending      uint64 `json:"pending"`
	InFlight     int    `json:"in_flight"`
	Redelivered  int    `json:"redelivered"`
	WaitingPulls int    `json:"waiting_pulls"`
	Workers      int    `json:"workers"` // worker processes answering wxhub status
}

type statusReport struct {
	Apps      []appStatus     `json:"apps"`
	Jobs      []jobStatus     `json:"jobs"`
	Processes []processStatus `json:"processes"`
}

// collectStatus reads the token, lease and quota records of every app
// in wx_tokens or in a holder's reply (procs: an app whose first fetch
// fails has no token yet), and the job consumers' state, each stream
// through js (the admin's view). It lists the token keys with JetStream
// API requests alone (no KV watch): in the accounts layout wx_tokens is
// in HOLDER, reached only through the API it imports (see
// broker.BucketKeys).
func collectStatus(ctx context.Context, js *broker.JetStreams, procs []processStatus) (statusReport, error) {
	st := statusReport{Processes: procs}
	b, err := openStatusBuckets(ctx, js)
	if err != nil {
		return st, err
	}
	keys, err := broker.BucketKeys(ctx, js.Bucket(events.BucketTokens), events.BucketTokens)
	if err != nil {
		return st, fmt.Errorf("list tokens: %w", err)
	}
	now := time.Now()
	for _, id := range statusAppIDs(keys, procs) {
		if a, ok := b.app(ctx, id, now, procs); ok {
			st.Apps = append(st.Apps, a)
		}
	}
	stream, err := js.For(events.StreamJobs).Stream(ctx, events.StreamJobs)
	if err != nil {
		return st, fmt.Errorf("stream %s: %w", events.StreamJobs, err)
	}
	lister := stream.ListConsumers(ctx)
	for ci := range lister.Info() {
		j := jobStatus{Subject: ci.Config.FilterSubject, Consumer: ci.Name, Pending: ci.NumPending,
			InFlight: ci.NumAckPending, Redelivered: ci.NumRedelivered, WaitingPulls: ci.NumWaiting}
		st.Jobs = append(st.Jobs, j)
	}
	if err := lister.Err(); err != nil {
		return st, fmt.Errorf("list consumers: %w", err)
	}
	sort.Slice(st.Jobs, func(i, k int) bool { return st.Jobs[i].Subject < st.Jobs[k].Subject })
	return st, nil
}

// statusBuckets are the buckets an app's status is read from; leases
// and quota are nil when they cannot be opened (the columns show "-" and
// 0).
type statusBuckets struct {
	tokens, leases, quota jetstream.KeyValue
}

func openStatusBuckets(ctx context.Context, js *broker.JetStreams) (statusBuckets, error) {
	var b statusBuckets
	var err error
	b.tokens, err = js.Bucket(events.BucketTokens).KeyValue(ctx, events.BucketTokens)
	if err != nil {
		return b, fmt.Errorf("bucket %s: %w (run `wxhub provision` first%s)", events.BucketTokens, err, accountsHint(js))
	}
	b.leases, _ = js.Bucket(events.BucketLeases).KeyValue(ctx, events.BucketLeases)
	b.quota, _ = js.Bucket(events.BucketQuota).KeyValue(ctx, events.BucketQuota)
	return b, nil
}

// statusAppIDs is the sorted union of the token keys and the apps the
// answering holders are configured with.
func statusAppIDs(keys []string, procs []processStatus) []string {
	ids := append([]string(nil), keys...)
	for _, p := range procs {
		for _, a := range p.Apps {
			ids = append(ids, a.AppID)
		}
	}
	slices.Sort(ids)
	return slices.Compact(ids)
}

// app reads appid's status. ok is false when wx_tokens holds no
// readable token for it and no answering holder is configured with it
// (a deleted key, or not a token record).
func (b statusBuckets) app(ctx context.Context, appid string, now time.Time, procs []processStatus) (a appStatus, ok bool) {
	a = appStatus{AppID: appid, Leader: "-"}
	if rec, err := readToken(ctx, b.tokens, appid); err == nil {
		a.Version, a.Mode, a.ExpiresAt = rec.Version, rec.Mode, rec.ExpiresAt
		a.ExpiresIn = rec.ExpiresAt.Sub(now).Round(time.Second).String()
	} else if h := configuredApp(procs, appid); h != nil {
		a.Mode = h.Mode
	} else {
		return a, false
	}
	if b.leases != nil {
		if e, err := b.leases.Get(ctx, appid); err == nil {
			a.Leader = string(e.Value())
		}
	}
	a.FetchesToday = b.count(ctx, events.QuotaKey(appid, now))
	if a.Mode == events.ModeStableToken {
		forced := b.count(ctx, events.ForceQuotaKey(appid, now))
		a.ForcedToday, a.ForcedLeft = &forced, ptr(max(holder.StableForceDailyLimit-forced, 0))
	} else if h := configuredApp(procs, appid); h != nil && h.QuotaLimit > 0 {
		a.QuotaLimit, a.QuotaReserve = ptr(h.QuotaLimit), ptr(h.QuotaReserve)
		a.QuotaLeft = ptr(max(h.QuotaLimit-a.FetchesToday, 0))
	}
	return a, true
}

// count reads the count of a wx_quota record (events.ParseQuotaRecord:
// a QuotaRecord, or a bare count): 0 when absent or unreadable.
func (b statusBuckets) count(ctx context.Context, key string) int {
	if b.quota == nil {
		return 0
	}
	e, err := b.quota.Get(ctx, key)
	if err != nil {
		return 0
	}
	r, err := events.ParseQuotaRecord(e.Value())
	if err != nil {
		return 0
	}
	return int(r.Used)
}

func ptr[T any](v T) *T { return &v }

// quotaCell is the QUOTA LEFT column: for a token mode app the fetches
// left of the holder's daily limit and its reserve ("1990/2000 (reserve
// 200)": forced refreshes stop when the left reach the reserve), for a
// stable_token app the force_refresh calls left of WeChat's 20 ("18/20
// forced"); "-" when no holder configured with a token mode app answers.
func quotaCell(a appStatus) string {
	switch {
	case a.ForcedLeft != nil:
		return fmt.Sprintf("%d/%d forced", *a.ForcedLeft, holder.StableForceDailyLimit)
	case a.QuotaLeft != nil:
		s := fmt.Sprintf("%d/%d", *a.QuotaLeft, *a.QuotaLimit)
		if *a.QuotaReserve > 0 {
			s += fmt.Sprintf(" (reserve %d)", *a.QuotaReserve)
		}
		return s
	}
	return "-"
}

// configuredApp is appid's entry in the reply of the holder leading it,
// else of the first holder configured with it; nil when none is.
func configuredApp(procs []processStatus, appid string) *presenceApp {
	var first *presenceApp
	for i := range procs {
		if h := procs[i].app(appid); h != nil {
			if h.Leader {
				return h
			}
			if first == nil {
				first = h
			}
		}
	}
	return first
}

// mergeLockouts fills each app's lockouts from the reply of the holder
// that leads it; with no leader, the app is not_leading, plus any holder
// that refuses to lead because of clock skew.
func mergeLockouts(st *statusReport) {
	for i := range st.Apps {
		a := &st.Apps[i]
		a.Lockouts = []holder.Lockout{}
		var leader *processStatus
		for k := range st.Processes {
			if p := &st.Processes[k]; p.Role == "holder" && p.ID == a.Leader {
				leader = p
			}
		}
		if leader != nil {
			a.Lockouts = append(a.Lockouts, leader.Lockouts[a.AppID]...)
			continue
		}
		detail := "no holder holds the lease for this appid: nobody refreshes its token"
		if a.Leader != "-" {
			detail = "the lease is held by " + a.Leader + ", which does not answer: it may have died (a standby takes over when the lease lapses)"
		}
		a.Lockouts = append(a.Lockouts, holder.Lockout{State: holder.LockoutNotLeading, Detail: detail})
		for _, p := range st.Processes {
			for _, l := range p.Lockouts[a.AppID] {
				if l.State == holder.LockoutClockSkew {
					l.Detail = "holder " + p.ID + ": " + l.Detail
					a.Lockouts = append(a.Lockouts, l)
				}
			}
		}
	}
}

// lockoutSummary is the LOCKOUTS column: "-" or "state until HH:MM:SSZ, ...".
func lockoutSummary(ls []holder.Lockout) string {
	if len(ls) == 0 {
		return "-"
	}
	parts := make([]string, 0, len(ls))
	for _, l := range ls {
		p := l.State
		if !l.Until.IsZero() {
			p += " until " + l.Until.UTC().Format(time.RFC3339)
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, ", ")
}
