package config

import (
	"time"

	"github.com/wxhub/wxhub/gateway"
)

// GatewayDrain is how long `wxhub gateway` lets the requests in flight
// finish on SIGTERM (gateway.DrainFor): a request's headers, then a
// relayed call's bounds (its token wait, its body, the call) or the web
// login's wait (web_login.wait), whichever is longer, plus
// gateway.DrainMargin. A
// stop timeout (Kubernetes terminationGracePeriodSeconds, systemd
// TimeoutStopSec) must cover it; MaxGatewayDrain covers every wait
// accepted.
func (c *Config) GatewayDrain() time.Duration {
	return gateway.DrainFor(0, 0, c.WebLogin.Wait)
}

// MaxGatewayDrain is GatewayDrain with the longest web_login.wait
// accepted (MaxWebLoginWait).
func MaxGatewayDrain() time.Duration { return gateway.DrainFor(0, 0, MaxWebLoginWait) }

// GatewayApps returns the configured apps as gateway.Config takes them
// (call ResolveSecrets first).
func (c *Config) GatewayApps() []gateway.App {
	apps := make([]gateway.App, len(c.Apps))
	for i, a := range c.Apps {
		apps[i] = gateway.App{AppID: a.AppID, Secret: a.Secret}
	}
	return apps
}

// GatewayClients returns the gateway's clients as gateway.Config takes
// them (call ResolveClientKeys first).
func (c *Config) GatewayClients() []gateway.Client {
	clients := make([]gateway.Client, len(c.Gateway.Clients))
	for i, cl := range c.Gateway.Clients {
		clients[i] = gateway.Client{Name: cl.Name, Key: cl.Key, AppIDs: cl.AppIDs, Paths: cl.Paths,
			Rate: cl.Rate, Burst: cl.Burst, RealToken: cl.RealToken}
	}
	return clients
}
