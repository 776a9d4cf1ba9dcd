// Package schemas holds the JSON Schemas (draft 2020-12) of every payload
// wxhub publishes or consumes on NATS, one file per bare subject name:
// "<subject>.schema.json". They are embedded in the binary and are the
// language-neutral half of the contract whose Go half is package events;
// tests in events keep the two in step.
//
// The job schemas (user.lookup, oauth.code.received) are closed
// (additionalProperties false): a misspelt property makes the job invalid
// instead of being silently ignored. The result and token-event schemas are
// closed too, so that a credential (a user's access_token, the global
// token) can never slip into an event unnoticed.
//
// Package events compiles these schemas and validates against them; use
// this package directly to serve or copy the schema documents themselves.
package schemas
