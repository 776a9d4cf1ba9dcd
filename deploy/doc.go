// Package deploy holds wxhub's deployment files and their tests: a
// three-node NATS JetStream cluster with per-role users (nats/), systemd
// units (systemd/), Kubernetes manifests and NATS Helm values (kubernetes/),
// the container image (Dockerfile), a Grafana dashboard (grafana/) and
// Prometheus alerting rules (prometheus/). See README.md in this folder.
//
// The package has no Go API; its tests load the files with the real
// parsers (nats-server's config loader, wxhub's own flag and YAML loader)
// and start the NATS cluster in-process to check its permissions.
package deploy
