// Command weblogincheck shows the check a business makes before it trusts
// a web login's result: the result's Wx-Correlation-Id must be the hex
// SHA-256 of the state in the user's session (docs/web-login.md). It
// follows user.profile and user.profile.failed and says, for each result,
// whether it belongs to the login started with the state given:
//
//	go run ./docs/examples/weblogincheck SESSION_STATE
//
// NATS_URL selects another server (default nats://127.0.0.1:4222).
package main

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"os"
	"os/signal"

	"github.com/nats-io/nats.go"
)

// fromThisSession reports whether a login's result (a user.profile or
// user.profile.failed message) belongs to the login started with
// sessionState: its Wx-Correlation-Id is the hex SHA-256 of that state.
func fromThisSession(result *nats.Msg, sessionState string) bool {
	sum := sha256.Sum256([]byte(sessionState))
	return subtle.ConstantTimeCompare([]byte(result.Header.Get("Wx-Correlation-Id")),
		[]byte(hex.EncodeToString(sum[:]))) == 1
}

func main() {
	if len(os.Args) != 2 || os.Args[1] == "" {
		fmt.Fprintln(os.Stderr, "usage: weblogincheck SESSION_STATE")
		os.Exit(2)
	}
	url := os.Getenv("NATS_URL")
	if url == "" {
		url = nats.DefaultURL
	}
	nc, err := nats.Connect(url)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer nc.Close()
	for _, s := range []string{"user.profile", "user.profile.failed"} {
		if _, err := nc.Subscribe(s, func(m *nats.Msg) {
			fmt.Printf("job %s: from this session: %v\n", m.Header.Get("Nats-Msg-Id"), fromThisSession(m, os.Args[1]))
		}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, os.Interrupt)
	<-stop
}
