package worker

// KillJobConn closes the worker's job connection without draining, as if
// the process died: nothing in flight is acked or nak'd.
func (w *Worker) KillJobConn() {
	w.connMu.Lock()
	defer w.connMu.Unlock()
	if w.subConn != nil {
		w.subConn.Close()
	}
}

// Sweeps returns how many max-deliveries sweeps this worker completed.
func (w *Worker) Sweeps() int64 { return w.reaper.sweeps.Load() }
