package events_test

import (
	"testing"

	"github.com/wxhub/wxhub/events"
)

// TestDoneKey: the key is the hex sha256 of the result id (vectors from
// sha256sum), so every writer and reader of wx_done agrees on it.
func TestDoneKey(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ id, key string }{
		{"job-1", "026ab639c21df8aa80e5789370a9db1b8b524b776fd8a0c2ba71efb377ecc7d9"},
		{"oauth:wxappid:code-1", "f4f42086ed8df71ba57c047b3ca1dcd9b49c204181517ce0974fc45c54887045"},
		{"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
	} {
		if got := events.DoneKey(tc.id); got != tc.key {
			t.Errorf("DoneKey(%q) = %s, want %s", tc.id, got, tc.key)
		}
	}
}

// TestDeadLetterMarkKey: one key per job message (result id and WX_JOBS
// sequence), never a done record's key.
func TestDeadLetterMarkKey(t *testing.T) {
	t.Parallel()
	a, b, c := events.DeadLetterMarkKey("job-1", 7), events.DeadLetterMarkKey("job-1", 8), events.DeadLetterMarkKey("job-2", 7)
	if a != "dl."+events.DoneKey("job-1@7") || a == b || a == c || a == events.DoneKey("job-1") {
		t.Errorf("keys %s %s %s", a, b, c)
	}
}
