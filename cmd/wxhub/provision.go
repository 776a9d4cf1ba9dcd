package main

import (
	"context"
	"fmt"
	"time"

	"github.com/wxhub/wxhub/broker"
	"github.com/wxhub/wxhub/broker/grants"
	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/internal/config"
	"github.com/wxhub/wxhub/internal/redact"
	"github.com/wxhub/wxhub/worker"
)

// cmdProvision creates or updates every stream, bucket and durable
// consumer on an existing NATS. It needs admin credentials: no other
// role's grant may create, update, purge or delete streams (package
// broker/grants), so holders, workers and gateways only bind to what this
// made. Run it before the first start and after every upgrade; it is
// idempotent.
func cmdProvision(ctx context.Context, env *cmdEnv, args []string) error {
	var opts config.ProvisionOptions
	cfg, _, err := parseConfig(env, "provision", config.CommandProvision, args, opts.AddFlags)
	if err != nil {
		return err
	}
	if cfg.Replicas < 1 || cfg.Replicas > 5 {
		return usagef("replicas: %d, want 1 to 5", cfg.Replicas)
	}
	if cfg.Worker.MaxDeliver < 1 || cfg.Worker.AckWait < time.Second || opts.MaxAckPending < 1 {
		return usagef("max-deliver (%d) and max-ack-pending (%d) must be at least 1, ack-wait (%v) at least 1s",
			cfg.Worker.MaxDeliver, opts.MaxAckPending, cfg.Worker.AckWait)
	}
	if err := checkDuplicateWindow(cfg); err != nil {
		return err
	}
	if span := worker.DeliverySpan(cfg.Worker.AckWait, cfg.Worker.MaxDeliver, 0); cfg.DuplicateWindow <= span {
		fmt.Fprintf(env.stderr, "warning: duplicate-window (%v) is not longer than max-deliver × (ack-wait + 30 s) = %v: a job whose worker dies between storing its result and recording it done, and whose redelivery then fails transiently, can get a second result\n", cfg.DuplicateWindow, span)
	}
	nc, js, err := connectAs(cfg, "wxhub-provision", grants.Provision)
	if err != nil {
		return err
	}
	defer nc.Close()
	warnDemoPassword(cfg, newLogger(env, cfg.Log))
	t := broker.Topology{Prefix: cfg.Prefix, Replicas: cfg.Replicas, DuplicateWindow: cfg.DuplicateWindow,
		AckWait: cfg.Worker.AckWait, MaxDeliver: cfg.Worker.MaxDeliver, MaxAckPending: opts.MaxAckPending}
	pctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	if err := broker.Provision(pctx, js, t); err != nil {
		return fmt.Errorf("%w (provisioning needs the admin user's credentials)", err)
	}
	// in names the account of each stream in the accounts layout.
	in := func(stream string) string {
		if !cfg.NATS.Accounts {
			return ""
		}
		return " (account " + grants.StreamAccount(stream) + ")"
	}
	for _, sc := range t.StreamConfigs() {
		fmt.Fprintf(env.stdout, "stream   %-20s %v%s\n", sc.Name, sc.Subjects, in(sc.Name))
	}
	for _, kc := range t.BucketConfigs() {
		fmt.Fprintf(env.stdout, "bucket   %s%s\n", kc.Bucket, in(grants.KVStream(kc.Bucket)))
	}
	for _, cc := range t.ConsumerConfigs() {
		fmt.Fprintf(env.stdout, "consumer %-32s on %s (ack_wait %v, max_deliver %d)\n", cc.Durable, events.StreamJobs, cc.AckWait, cc.MaxDeliver)
	}
	fmt.Fprintf(env.stdout, "provisioned %s with %d replica(s)\n", redact.URL(cfg.NATS.URL), cfg.Replicas)
	return nil
}
