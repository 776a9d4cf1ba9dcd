package events_test

import (
	"encoding/json"
	"testing"

	"github.com/wxhub/wxhub/events"
)

func BenchmarkValidateUserLookup(b *testing.B) {
	data := []byte(goodLookup)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if err := events.Validate(events.SubjectUserLookup, data); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkValidateUserLookupInvalid(b *testing.B) {
	data := []byte(`{"job_id":"a b","appid":7,"lang":"fr","x":1}`)
	b.ReportAllocs()
	for b.Loop() {
		if err := events.Validate(events.SubjectUserLookup, data); err == nil {
			b.Fatal("validated")
		}
	}
}

func BenchmarkDecodeUserLookup(b *testing.B) {
	data := []byte(goodLookup)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := events.DecodeUserLookup(data); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeUserLookupParallel(b *testing.B) {
	data := []byte(goodLookup)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := events.DecodeUserLookup(data); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkValidateUserProfile(b *testing.B) {
	data, _ := json.Marshal(fullyPopulated[events.SubjectUserProfile])
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if err := events.Validate(events.SubjectUserProfile, data); err != nil {
			b.Fatal(err)
		}
	}
}
