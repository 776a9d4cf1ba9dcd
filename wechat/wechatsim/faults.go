package wechatsim

import (
	"fmt"
	mrand "math/rand/v2"
)

// Fault makes matching API calls misbehave. Exactly one of ErrCode and
// HTTPStatus may be set; DelayMS may be combined with either or stand
// alone. Without Count and Rate the fault fires forever.
type Fault struct {
	Path       string  `json:"path"`        // e.g. "/cgi-bin/user/info"; "" or "*" = every API path
	ErrCode    int     `json:"errcode"`     // answer {"errcode":N,"errmsg":...}; 0 = not an errcode fault
	HTTPStatus int     `json:"http_status"` // answer this HTTP status with a non-JSON body
	DelayMS    int     `json:"delay_ms"`    // add this delay, then answer as told above, or normally
	Count      int     `json:"count"`       // fire on the next Count matching calls, then remove itself
	Rate       float64 `json:"rate"`        // fire on this fraction of matching calls (0..1)
}

type faultState struct {
	f    Fault
	left int // firings left when f.Count > 0
}

// Validate reports what is wrong with f, if anything.
func (f Fault) Validate() error {
	switch {
	case f.Path != "" && f.Path != "*" && endpointIndex(f.Path) < 0:
		return fmt.Errorf("%w: path %q is not a simulated endpoint", ErrBadInput, f.Path)
	case f.ErrCode == 0 && f.HTTPStatus == 0 && f.DelayMS == 0:
		return fmt.Errorf("%w: a fault needs errcode, http_status or delay_ms", ErrBadInput)
	case f.ErrCode != 0 && f.HTTPStatus != 0:
		return fmt.Errorf("%w: errcode and http_status are exclusive", ErrBadInput)
	case f.HTTPStatus != 0 && (f.HTTPStatus < 100 || f.HTTPStatus > 599 || f.HTTPStatus == 200):
		return fmt.Errorf("%w: http_status %d is not an HTTP error status", ErrBadInput, f.HTTPStatus)
	case f.DelayMS < 0:
		return fmt.Errorf("%w: delay_ms must not be negative", ErrBadInput)
	case f.Count < 0:
		return fmt.Errorf("%w: count must not be negative", ErrBadInput)
	case f.Rate < 0 || f.Rate > 1:
		return fmt.Errorf("%w: rate must be within 0..1", ErrBadInput)
	}
	return nil
}

// AddFault appends f to the fault list. Faults are checked in insertion
// order; the first that fires decides the answer. An errcode or HTTP
// fault on /sns/oauth2/access_token still consumes the code.
func (s *Sim) AddFault(f Fault) error {
	if err := f.Validate(); err != nil {
		return err
	}
	s.faultsMu.Lock()
	s.faults = append(s.faults, &faultState{f: f, left: f.Count})
	s.nFaults.Store(int32(len(s.faults)))
	s.faultsMu.Unlock()
	s.log.Info("wechatsim: fault added", "path", f.Path, "errcode", f.ErrCode, "http_status", f.HTTPStatus,
		"delay_ms", f.DelayMS, "count", f.Count, "rate", f.Rate)
	return nil
}

// ClearFaults removes every fault.
func (s *Sim) ClearFaults() {
	s.faultsMu.Lock()
	s.faults = nil
	s.nFaults.Store(0)
	s.faultsMu.Unlock()
}

// Faults returns the active faults; Count is what is left of each.
func (s *Sim) Faults() []Fault {
	s.faultsMu.Lock()
	defer s.faultsMu.Unlock()
	out := make([]Fault, 0, len(s.faults))
	for _, fs := range s.faults {
		f := fs.f
		f.Count = fs.left
		out = append(out, f)
	}
	return out
}

// pickFault returns the first fault that fires for path, or nil.
func (s *Sim) pickFault(path string) *Fault {
	s.faultsMu.Lock()
	defer s.faultsMu.Unlock()
	for i, fs := range s.faults {
		if fs.f.Path != "" && fs.f.Path != "*" && fs.f.Path != path {
			continue
		}
		if fs.f.Rate > 0 && mrand.Float64() >= fs.f.Rate {
			continue
		}
		f := fs.f
		if fs.f.Count > 0 {
			fs.left--
			if fs.left <= 0 {
				s.faults = append(s.faults[:i:i], s.faults[i+1:]...)
				s.nFaults.Store(int32(len(s.faults)))
			}
		}
		return &f
	}
	return nil
}
