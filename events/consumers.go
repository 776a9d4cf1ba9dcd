package events

import "strings"

// WorkerConsumer is the durable consumer on StreamJobs that every worker
// process shares for a bare job subject, e.g. "wxhub-worker-user-lookup".
// The admin provisions it (broker.Provision); workers only bind to it.
func WorkerConsumer(bareJobSubject string) string {
	return "wxhub-worker-" + strings.ReplaceAll(bareJobSubject, ".", "-")
}
