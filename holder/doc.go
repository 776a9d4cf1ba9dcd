// Package holder keeps each configured app's global access_token in the
// NATS KV bucket wx_tokens and publishes token.refreshed: the token
// lifecycle of shared/DESIGN.md. Several holders may run; per appid exactly
// one, the leader, fetches.
package holder
