package holder

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/wxhub/wxhub/events"
)

// A holder that leads and stops cleanly steps down at Info and logs no
// warning or error: operators alert on warnings, and a planned stop (a
// rolling restart) is not one.
func TestCleanStopLogsNoWarning(t *testing.T) {
	e := newTestEnv(t)
	app := e.newApp(events.ModeToken)
	r := e.start(e.config("h0", app), nil)
	waitRefreshed(t, e, app.AppID, 1)
	r.stop(t)

	logs := e.logs.String()
	if !containsLog(logs, "INFO", "stepped down as token leader") {
		t.Errorf("no Info step-down on stop; logs:\n%s", logs)
	}
	for _, line := range strings.Split(logs, "\n") {
		var l struct{ Level, Msg string }
		if json.Unmarshal([]byte(line), &l) == nil && (l.Level == "WARN" || l.Level == "ERROR") {
			t.Errorf("clean stop logged %s: %s", l.Level, line)
		}
	}
}
