// Package docs holds wxhub's user documentation (the Markdown pages in
// this folder, starting at README.md) and the tests that keep it honest:
// every subject, stream, KV bucket, header and durable consumer the pages
// name must exist in package events (or package worker, for consumers),
// every one the code defines must be documented, and every relative link
// in README.md and docs/ must point at a file inside the repository.
//
// The package has no Go API; it exists for its tests.
package docs
