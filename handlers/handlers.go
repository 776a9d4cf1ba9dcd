package handlers

import (
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/wxhub/wxhub/events"
)

// Handlers runs jobs. It is safe for concurrent use: the router calls its
// handler funcs from many goroutines.
type Handlers struct {
	cfg      Config
	subjects events.Subjects
	apps     map[string]App
	log      *slog.Logger

	stats struct {
		deliveries, succeeded, failed, invalid, retried, republished, alreadyDone, duplicates atomic.Int64
	}
}

// Stats counts what one Handlers did since it was made.
type Stats struct {
	Deliveries  int64 // job deliveries handled
	Succeeded   int64 // user.profile published
	Failed      int64 // user.profile.failed published (invalid jobs included)
	Invalid     int64 // jobs rejected as bad input or unknown appid
	Retried     int64 // deliveries nak'd for a later retry
	Republished int64 // OAuth results republished from a stored outcome
	AlreadyDone int64 // deliveries acked at once: the job had a done record
	Duplicates  int64 // results the stream dropped as duplicates (stored before)
}

// New checks cfg and returns Handlers.
func New(cfg Config) (*Handlers, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	h := &Handlers{cfg: cfg, subjects: events.NewSubjects(cfg.Prefix), apps: map[string]App{}, log: cfg.Logger}
	for _, a := range cfg.Apps {
		h.apps[a.AppID] = a
	}
	return h, nil
}

// NakDelayMin is the shortest redelivery delay in effect (Config.NakDelayMin
// or its default): the delay for a failure that asked for none.
func (h *Handlers) NakDelayMin() time.Duration { return h.cfg.NakDelayMin }

// Stats returns the counters so far.
func (h *Handlers) Stats() Stats {
	return Stats{
		Deliveries:  h.stats.deliveries.Load(),
		Succeeded:   h.stats.succeeded.Load(),
		Failed:      h.stats.failed.Load(),
		Invalid:     h.stats.invalid.Load(),
		Retried:     h.stats.retried.Load(),
		Republished: h.stats.republished.Load(),
		AlreadyDone: h.stats.alreadyDone.Load(),
		Duplicates:  h.stats.duplicates.Load(),
	}
}

// Subjects returns the subject names the handlers use.
func (h *Handlers) Subjects() events.Subjects { return h.subjects }
