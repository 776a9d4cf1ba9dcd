package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
)

// faultEnv names the fault-injection variable of the worker role, for
// fault tests only: WXHUB_TEST_FAULT=<stage>:<n> makes the process SIGKILL
// itself the n-th time a job reaches stage (handlers.FaultResultStored:
// "result-stored", the result is stored and the job neither recorded done
// nor acked; handlers.FaultDoneRecorded: "done-recorded", recorded done
// but not acked). Unset (always, outside tests) it does nothing.
const faultEnv = "WXHUB_TEST_FAULT"

// testFault returns the worker's fault hook from faultEnv, or nil.
func testFault() func(stage, resultID string) {
	v := os.Getenv(faultEnv)
	if v == "" {
		return nil
	}
	stage, nth, ok := strings.Cut(v, ":")
	n, err := strconv.Atoi(nth)
	if !ok || err != nil || n < 1 {
		fmt.Fprintf(os.Stderr, "wxhub: ignoring %s=%q (want <stage>:<n>)\n", faultEnv, v)
		return nil
	}
	var seen atomic.Int64
	return func(s, id string) {
		if s != stage || seen.Add(1) != int64(n) {
			return
		}
		fmt.Fprintf(os.Stderr, "wxhub: %s: killing myself at %s of job %s\n", faultEnv, s, id)
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal is on its way
	}
}
