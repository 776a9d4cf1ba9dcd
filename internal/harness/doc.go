// Package harness is the shared machinery of wxbench (make bench) and
// wxchaos (make chaos): it builds and runs wxhub and nats-server as child
// processes on loopback, serves the WeChat simulator in-process, publishes
// jobs and follows their results in the WX_RESULTS stream, and turns what
// it measured into summaries, tables and JSON.
//
// Pieces:
//
//   - Summarize and Percentile: latency summaries (nearest-rank percentiles).
//   - Proc and StartProc: a child process with its output in a log file,
//     stopped with SIGTERM or killed with SIGKILL; ReadCPU and ReadRSS read
//     /proc for CPU time (utime+stime) and resident memory (VmRSS).
//   - BuildGo, StartNATS: nats-server built from the module cache, one node
//     or a three-node JetStream cluster with routes on 127.0.0.1, each node
//     killable and restartable on its own store directory.
//   - StartSim: the simulator (package wechatsim) on a loopback listener,
//     with a per-worker URL prefix (/w3/...) so that every WeChat call can be
//     attributed to the worker that made it, and a TokenWatch that records
//     when each worker first used a given access_token.
//   - Tracker: job ids, publish times and terminal results per job, read
//     from WX_RESULTS with an ordered consumer; it counts duplicates (more
//     than one terminal result for a job_id) and lost jobs (no terminal
//     result by a deadline), and drives closed-loop load.
//   - Table: plain-text tables for the terminal.
//
// Every loop has a count or a deadline, every address is 127.0.0.1, and
// secrets (AppSecrets, tokens) never reach a log line or a report.
package harness
