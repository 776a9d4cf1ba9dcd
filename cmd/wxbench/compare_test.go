package main

import (
	"testing"
	"time"
)

func TestPeerMeasure(t *testing.T) {
	for _, tc := range []struct {
		measure time.Duration
		conc    int
		lat     time.Duration
		want    time.Duration
	}{
		{3 * time.Second, 64, 0, 3 * time.Second},                                // CPU-bound: as asked
		{3 * time.Second, 64, 50 * time.Millisecond, 7812500 * time.Microsecond}, // 1280 jobs/s: 10,000 jobs
		{3 * time.Second, 256, 50 * time.Millisecond, 3 * time.Second},           // 5120 jobs/s: 3 s is enough
		{2 * time.Second, 16, 50 * time.Millisecond, peerMaxMeasure},             // capped
		{12 * time.Second, 64, 50 * time.Millisecond, 12 * time.Second},          // never shorter
	} {
		if got := peerMeasure(tc.measure, tc.conc, tc.lat); got != tc.want {
			t.Errorf("peerMeasure(%v, %d, %v) = %v, want %v", tc.measure, tc.conc, tc.lat, got, tc.want)
		}
	}
}
