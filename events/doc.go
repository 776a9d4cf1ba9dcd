// Package events is wxhub's public contract on NATS: the subjects, the JSON
// payloads published on them, and the KV buckets and records the holder and
// the workers share. The JSON Schemas in package schemas describe the same
// payloads; tests keep the two in step.
//
// Subjects may carry a configured prefix (such as "wx."); use Subjects to
// get the names for a prefix instead of the bare constants.
package events
