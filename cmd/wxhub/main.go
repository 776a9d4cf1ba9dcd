// Command wxhub is the WeChat credential service: one binary that runs the
// token holder, the workers, the WeChat simulator, or all of them on an
// embedded NATS server, plus client commands for people and scripts.
//
//	wxhub run                              everything in one process (embedded NATS)
//	wxhub holder | worker | gateway | sim  one role each, for production
//	wxhub provision                        create streams, buckets and consumers (admin credentials)
//	wxhub lookup --appid A --openid O      publish a user.lookup job, print the result
//	wxhub oauth --appid A --code C         publish an oauth.code.received job, print the result
//	wxhub token get|invalidate --appid A   token metadata / ask the holder for a manual refresh
//	wxhub status                           tokens, quota, leaders, job backlog
//	wxhub result --job-id J                a past job's stored result
//	wxhub deadletters list|show|replay     rejected jobs; publish a fixed one again
//	wxhub userinfo --appid A --openid O    publish an oauth.userinfo job (vault apps), print the result
//	wxhub vault keygen|rotate|forget|check the user-token vault (as the worker user)
//
// Exit status: 0 success, 1 failure (including a user.profile.failed
// result), 2 usage or configuration error.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Exit statuses.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// usageError marks an error the user can fix by changing the command line
// or the configuration (exit status 2).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

// failure marks a command that ran but whose outcome is a failure (exit 1),
// already reported on stdout.
var errFailed = errors.New("failed")

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, env *cmdEnv, args []string) error
}

// cmdEnv is what a command sees of the process: handy for tests.
type cmdEnv struct {
	stdout, stderr io.Writer
	stdin          io.Reader // nil in tests that need none
	getenv         func(string) string
}

func commands() []command {
	return []command{
		{"run", "run everything in one process on an embedded NATS server (the zero-setup default)", cmdRun},
		{"provision", "create or update every stream, bucket and consumer on an existing NATS (admin credentials)", cmdProvision},
		{"holder", "run the token holder against an existing NATS", cmdHolder},
		{"worker", "run job workers against an existing NATS", cmdWorker},
		{"gateway", "serve WeChat's API to existing SDKs: tokens from wxhub, every other call relayed", cmdGateway},
		{"sim", "run the WeChat API simulator", cmdSim},
		{"lookup", "publish a user.lookup job and print its result", cmdLookup},
		{"oauth", "publish an oauth.code.received job and print its result", cmdOAuth},
		{"token", "token get|invalidate --appid A: token metadata, or ask the leading holder for a manual refresh", cmdToken},
		{"status", "tokens, quota and leaders per app; backlog per job subject", cmdStatus},
		{"result", "result --job-id J: print a past job's stored result", cmdResult},
		{"deadletters", "deadletters list|show|replay: browse rejected jobs, publish a fixed one again", cmdDeadLetters},
		{"userinfo", "publish an oauth.userinfo job (vault apps) and print its result", cmdUserInfo},
		{"vault", "vault keygen|rotate|forget|check: the user-token vault's keys and records (worker user's NATS credentials)", cmdVault},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// The first signal stops gracefully (in-flight work finishes); the
	// handler is then released, so a second one ends the process at once,
	// as the signal's default action (a double Ctrl-C). Work cut that way
	// is redelivered, never lost.
	context.AfterFunc(ctx, stop)
	code := run(ctx, &cmdEnv{stdout: os.Stdout, stderr: os.Stderr, stdin: os.Stdin, getenv: os.Getenv}, os.Args[1:])
	stop()
	os.Exit(code)
}

func run(ctx context.Context, env *cmdEnv, args []string) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		printUsage(env.stderr)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	if args[0] == "--version" || args[0] == "-version" || args[0] == "version" {
		printVersion(env.stdout)
		return exitOK
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, env, args[1:])
		var ue usageError
		switch {
		case err == nil:
			return exitOK
		case errors.Is(err, flag.ErrHelp):
			return exitOK
		case errors.As(err, &ue):
			fmt.Fprintf(env.stderr, "wxhub %s: %v\n", c.name, err)
			return exitUsage
		case errors.Is(err, errFailed):
			return exitFailure
		default:
			fmt.Fprintf(env.stderr, "wxhub %s: %v\n", c.name, err)
			return exitFailure
		}
	}
	fmt.Fprintf(env.stderr, "wxhub: unknown command %q\n\n", args[0])
	printUsage(env.stderr)
	return exitUsage
}

func printUsage(w io.Writer) {
	fmt.Fprintln(w, "usage: wxhub <command> [flags]   (wxhub <command> -h for its flags; wxhub --version)")
	fmt.Fprintln(w, "\ncommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-12s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nEvery flag can also be set as WXHUB_<FLAG> (e.g. WXHUB_NATS_URL) or in a YAML file given with --config.")
}
