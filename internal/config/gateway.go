package config

import "github.com/wxhub/wxhub/gateway"

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
