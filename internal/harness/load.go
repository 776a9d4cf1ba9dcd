package harness

import (
	"context"
	"errors"
	"time"
)

// LoadConfig describes closed-loop load: Window jobs are kept in flight (a
// new job is published as soon as one gets its first terminal result)
// for Warmup plus Measure; the figures cover Measure only.
type LoadConfig struct {
	Subject string
	Payload func(jobID string) []byte
	// Window is the number of jobs in flight; 0 means 1.
	Window int
	// Warmup before measuring; Measure is the measured span (0 means 3 s).
	Warmup, Measure time.Duration
	// Drain bounds the wait for the jobs still in flight at the end
	// (0 means 30 s).
	Drain time.Duration
	// MaxJobs bounds how many jobs are published; 0 means 1,000,000.
	MaxJobs int
	// Stop, if not nil, ends the run early when closed (the figures then
	// cover the time from Warmup until Stop).
	Stop <-chan struct{}
}

// LoadResult is what one closed-loop run measured.
type LoadResult struct {
	Window     int     `json:"window"`
	Jobs       int     `json:"jobs"`       // results received within Measure
	Throughput float64 `json:"jobs_per_s"` // Jobs / Measure
	Latency    Summary `json:"latency"`    // publish → first result, jobs published within Measure
	Outcome    Outcome `json:"outcome"`    // all jobs of the run, after the drain
	MeasuredS  float64 `json:"measured_s"` // Measure in seconds
	DrainErr   string  `json:"drain_error,omitempty"`
}

// ClosedLoop runs closed-loop load through t (Start must have been
// called) and returns the figures. t must not be shared with other load.
func ClosedLoop(ctx context.Context, t *Tracker, cfg LoadConfig) (LoadResult, error) {
	if cfg.Window <= 0 {
		cfg.Window = 1
	}
	if cfg.Measure <= 0 {
		cfg.Measure = 3 * time.Second
	}
	if cfg.Drain <= 0 {
		cfg.Drain = 30 * time.Second
	}
	if cfg.MaxJobs <= 0 {
		cfg.MaxJobs = 1_000_000
	}
	slots := make(chan struct{}, cfg.Window)
	for range cfg.Window {
		slots <- struct{}{}
	}
	t.OnFirstResult(func(int) {
		select {
		case slots <- struct{}{}:
		default:
		}
	})
	defer t.OnFirstResult(nil)

	start := time.Now()
	from := start.Add(cfg.Warmup)
	to := from.Add(cfg.Measure)
	timer := time.NewTimer(time.Until(to))
	defer timer.Stop()
	var pubErr error
loop:
	for n := 0; n < cfg.MaxJobs; n++ {
		select {
		case <-ctx.Done():
			return LoadResult{}, ctx.Err()
		case <-timer.C:
			break loop
		case <-cfg.Stop:
			break loop
		case <-slots:
		}
		if _, err := t.PublishAsync(cfg.Subject, cfg.Payload); err != nil {
			pubErr = err
			// The slot is lost with the job; give it back so load goes on.
			slots <- struct{}{}
		}
	}
	end := time.Now()
	res := LoadResult{Window: cfg.Window, MeasuredS: cfg.Measure.Seconds()}
	if err := t.WaitResolved(ctx, cfg.Drain); err != nil {
		res.DrainErr = err.Error()
	}
	var lat []time.Duration
	for _, j := range t.Jobs() {
		if !j.First.IsZero() && !j.First.Before(from) && j.First.Before(end) {
			res.Jobs++
		}
		if !j.Published.Before(from) && j.Published.Before(end) && !j.First.IsZero() {
			lat = append(lat, j.Latency())
		}
	}
	span := end.Sub(from)
	res.MeasuredS = span.Seconds()
	res.Throughput = Rate(res.Jobs, span)
	res.Latency = Summarize(lat)
	res.Outcome = t.Outcome()
	if pubErr != nil && res.Outcome.Published == 0 {
		return res, errors.Join(errors.New("harness: no job could be published"), pubErr)
	}
	return res, nil
}

// Sampler calls f every interval until Stop; it is for RSS and similar
// gauges sampled during a run.
type Sampler struct {
	stop chan struct{}
	done chan struct{}
}

// StartSampler starts calling f every interval.
func StartSampler(interval time.Duration, f func()) *Sampler {
	s := &Sampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		f()
		for {
			select {
			case <-s.stop:
				return
			case <-t.C:
				f()
			}
		}
	}()
	return s
}

// Stop stops the sampler and waits for a running call of f to return.
func (s *Sampler) Stop() {
	close(s.stop)
	<-s.done
}
