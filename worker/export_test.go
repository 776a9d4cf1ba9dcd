package worker

// KillJobConn closes the worker's connection (jobs, results, KV) without
// draining, as if the process died: nothing in flight is acked or nak'd.
func (w *Worker) KillJobConn() {
	w.cfg.Conn.Close()
}

// Sweeps returns how many max-deliveries sweeps this worker completed.
func (w *Worker) Sweeps() int64 { return w.reaper.sweeps.Load() }
