package main

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wxhub/wxhub/broker"
	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/internal/metrics"
	"github.com/wxhub/wxhub/worker"
)

// backlogCollector exports the job consumers' backlog and the streams'
// sizes, read from JetStream at scrape time (one consumer and one stream
// info request each, 2 s at most), so that alerts can see a backlog grow
// without a NATS exporter. Every worker process exports the same values:
// aggregate with max by (consumer) / max by (stream). Each stream is read
// through the worker's view js: in the accounts layout WX_JOBS, its
// durables, WX_RESULTS and WX_DEADLETTERS by $JS.CORE.API and
// WX_TOKEN_EVENTS by $JS.HOLDER.API (stream and consumer info, which the
// worker's grant allows).
type backlogCollector struct {
	js                                        *broker.JetStreams
	jobs                                      []string // bare job subjects
	pending, ackPending, redelivered, waiting *prometheus.Desc
	messages, bytes                           *prometheus.Desc
}

var registerBacklog sync.Once

// exportBacklog registers the collector on the metrics registry, once per
// process.
func exportBacklog(js *broker.JetStreams) {
	registerBacklog.Do(func() {
		var are prometheus.AlreadyRegisteredError
		if err := metrics.Registry.Register(newBacklogCollector(js)); err != nil && !errors.As(err, &are) {
			panic(err)
		}
	})
}

func newBacklogCollector(js *broker.JetStreams) *backlogCollector {
	return &backlogCollector{
		js:          js,
		jobs:        events.NewSubjects("").Jobs(),
		pending:     prometheus.NewDesc("wxhub_consumer_pending", "Jobs waiting in WX_JOBS for the durable consumer, not yet delivered.", []string{"consumer"}, nil),
		ackPending:  prometheus.NewDesc("wxhub_consumer_ack_pending", "Jobs delivered by the durable consumer and not yet acknowledged (in flight).", []string{"consumer"}, nil),
		redelivered: prometheus.NewDesc("wxhub_consumer_redelivered", "Jobs of the durable consumer delivered more than once and not yet acknowledged.", []string{"consumer"}, nil),
		waiting:     prometheus.NewDesc("wxhub_consumer_waiting_pulls", "Pull requests waiting on the durable consumer (idle worker capacity).", []string{"consumer"}, nil),
		messages:    prometheus.NewDesc("wxhub_stream_messages", "Messages stored in the stream.", []string{"stream"}, nil),
		bytes:       prometheus.NewDesc("wxhub_stream_bytes", "Bytes stored in the stream.", []string{"stream"}, nil),
	}
}

func (c *backlogCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.pending, c.ackPending, c.redelivered, c.waiting, c.messages, c.bytes} {
		ch <- d
	}
}

// Collect reads the infos; what cannot be read in time is left out of
// this scrape rather than reported as zero.
func (c *backlogCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, bare := range c.jobs {
		name := worker.ConsumerName(bare)
		cons, err := c.js.For(events.StreamJobs).Consumer(ctx, events.StreamJobs, name)
		if err != nil {
			continue
		}
		info, err := cons.Info(ctx)
		if err != nil {
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(info.NumPending), name)
		ch <- prometheus.MustNewConstMetric(c.ackPending, prometheus.GaugeValue, float64(info.NumAckPending), name)
		ch <- prometheus.MustNewConstMetric(c.redelivered, prometheus.GaugeValue, float64(info.NumRedelivered), name)
		ch <- prometheus.MustNewConstMetric(c.waiting, prometheus.GaugeValue, float64(info.NumWaiting), name)
	}
	for _, name := range []string{events.StreamJobs, events.StreamResults, events.StreamTokenEvents, events.StreamDeadLetters} {
		s, err := c.js.For(name).Stream(ctx, name)
		if err != nil {
			continue
		}
		info, err := s.Info(ctx)
		if err != nil {
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.messages, prometheus.GaugeValue, float64(info.State.Msgs), name)
		ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.GaugeValue, float64(info.State.Bytes), name)
	}
}
