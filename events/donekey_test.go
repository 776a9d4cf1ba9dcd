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
