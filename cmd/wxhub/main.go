// Command wxhub is the WeChat credential service: one binary that runs the
// token holder, the workers, the WeChat simulator, or all of them on an
// embedded NATS server, plus client commands for people and scripts.
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: wxhub <command> [flags]")
		os.Exit(2)
	}
	fmt.Fprintf(os.Stderr, "wxhub: unknown command %q\n", os.Args[1])
	os.Exit(2)
}
