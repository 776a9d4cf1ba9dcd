package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/internal/config"
)

func cmdStatus(ctx context.Context, env *cmdEnv, args []string) error {
	var asJSON bool
	var wait time.Duration
	cfg, _, err := parseConfig(env, "status", config.FlagsNATS, args, func(fs *flag.FlagSet) {
		fs.BoolVar(&asJSON, "json", false, "print JSON")
		fs.DurationVar(&wait, "wait", 500*time.Millisecond, "how long to gather replies from running holders and workers")
	})
	if err != nil {
		return err
	}
	nc, js, err := connect(cfg, "wxhub-cli")
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	st, err := collectStatus(ctx, js)
	if err != nil {
		return err
	}
	st.Processes, err = gatherStatus(ctx, nc, cfg.Prefix, wait)
	if err != nil {
		return err
	}
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
	fmt.Fprintln(tw, "APPID\tVERSION\tMODE\tEXPIRES IN\tFETCHES TODAY\tQUOTA LEFT\tLEADER")
	for _, a := range st.Apps {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%d\t%d\t%s\n", a.AppID, a.Version, a.Mode, a.ExpiresIn, a.FetchesToday, a.QuotaLeft, a.Leader)
	}
	fmt.Fprintln(tw)
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
	AppID        string    `json:"appid"`
	Version      uint64    `json:"version"`
	Mode         string    `json:"mode"`
	ExpiresAt    time.Time `json:"expires_at"`
	ExpiresIn    string    `json:"expires_in"`
	FetchesToday int       `json:"fetches_today"`
	QuotaLeft    int       `json:"quota_left"`
	Leader       string    `json:"leader"`
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

func collectStatus(ctx context.Context, js jetstream.JetStream) (statusReport, error) {
	var st statusReport
	tokens, err := js.KeyValue(ctx, events.BucketTokens)
	if err != nil {
		return st, fmt.Errorf("bucket %s: %w (has wxhub provisioned this NATS?)", events.BucketTokens, err)
	}
	leases, _ := js.KeyValue(ctx, events.BucketLeases)
	quota, _ := js.KeyValue(ctx, events.BucketQuota)
	keys, err := tokens.Keys(ctx)
	if err != nil && !errors.Is(err, jetstream.ErrNoKeysFound) {
		return st, fmt.Errorf("list tokens: %w", err)
	}
	sort.Strings(keys)
	now := time.Now()
	for _, k := range keys {
		rec, err := readToken(ctx, tokens, k)
		if err != nil {
			continue
		}
		a := appStatus{AppID: k, Version: rec.Version, Mode: rec.Mode, ExpiresAt: rec.ExpiresAt,
			ExpiresIn: rec.ExpiresAt.Sub(now).Round(time.Second).String(), Leader: "-"}
		if leases != nil {
			if e, err := leases.Get(ctx, k); err == nil {
				a.Leader = string(e.Value())
			}
		}
		if quota != nil {
			if e, err := quota.Get(ctx, events.QuotaKey(k, now)); err == nil {
				a.FetchesToday, _ = strconv.Atoi(string(e.Value()))
			}
		}
		a.QuotaLeft = 2000 - a.FetchesToday
		st.Apps = append(st.Apps, a)
	}
	stream, err := js.Stream(ctx, events.StreamJobs)
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
