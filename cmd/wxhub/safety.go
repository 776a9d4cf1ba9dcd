package main

import (
	"net"
	"strings"

	"github.com/wxhub/wxhub/broker/grants"
)

// checkEmbeddedListen refuses to expose `wxhub run`'s embedded NATS
// server beyond this machine: it has no authentication, so anyone who
// can reach it could read every token and rewrite every stream.
func checkEmbeddedListen(host string) error {
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return usagef("nats-listen: %q is not a loopback address, and the embedded NATS server of `wxhub run` has no authentication: "+
		"anyone who reaches it could read every token. Keep it on 127.0.0.1, or run a NATS cluster with the shipped accounts "+
		"(deploy/nats) and `wxhub provision`, `wxhub holder` and `wxhub worker` against it", host)
}

// inboxPrefix is the reply-subject prefix of a connection named
// "wxhub-<role>": holders, workers and gateways may subscribe to their own
// inbox only. Every other command uses the default.
func inboxPrefix(connName string) string {
	role, ok := strings.CutPrefix(connName, "wxhub-")
	if !ok {
		return ""
	}
	switch r := grants.Role(role); r {
	case grants.Holder, grants.Worker, grants.Gateway:
		return r.InboxPrefix()
	}
	return ""
}
