// Package broker connects wxhub to NATS: it starts an embedded nats-server
// with JetStream for the zero-setup default and for tests, dials an existing
// cluster with credentials and TLS, and provisions (idempotently) the
// streams and KV buckets of the contract in package events.
// TrimDoubledNATSPrefix says "nats: " once in the errors of nats.go's
// JetStream publish, which say it twice.
package broker
