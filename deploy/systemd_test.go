package deploy_test

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// unit is a systemd unit file: section → key → values (keys may repeat).
type unit map[string]map[string][]string

func (u unit) get(section, key string) []string { return u[section][key] }

func (u unit) one(section, key string) string {
	v := u[section][key]
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

// parseUnit reads the INI-like unit syntax: [Section], Key=Value, comments
// (# ;) and backslash continuations.
func parseUnit(t *testing.T, file string) unit {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := unit{}
	section := ""
	sc := bufio.NewScanner(f)
	var pending string
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if pending != "" {
			line = pending + " " + line
			pending = ""
		}
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		if strings.HasSuffix(line, `\`) {
			pending = strings.TrimSuffix(line, `\`)
			continue
		}
		if strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]") {
			section = line[1 : len(line)-1]
			u[section] = map[string][]string{}
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || section == "" {
			t.Fatalf("%s:%d: not Key=Value in a section: %q", file, n, line)
		}
		u[section][strings.TrimSpace(k)] = append(u[section][strings.TrimSpace(k)], strings.TrimSpace(v))
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return u
}

func TestSystemdUnits(t *testing.T) {
	cases := []struct {
		file     string
		role     string
		instance string // %i for a template
		minStop  time.Duration
	}{
		{"wxhub-holder.service", "holder", "", 10 * time.Second},
		{"wxhub-worker@.service", "worker", "8101", 60 * time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.file, func(t *testing.T) {
			u := parseUnit(t, filepath.Join("systemd", tc.file))
			want := map[string]string{
				"KillSignal":      "SIGTERM",
				"Restart":         "on-failure",
				"NoNewPrivileges": "yes",
				"ProtectSystem":   "strict",
				"PrivateTmp":      "yes",
				"User":            "wxhub",
			}
			for k, v := range want {
				if got := u.one("Service", k); got != v {
					t.Errorf("%s=%q, want %q", k, got, v)
				}
			}
			if u.one("Install", "WantedBy") != "multi-user.target" {
				t.Errorf("WantedBy=%q", u.one("Install", "WantedBy"))
			}
			stop, err := time.ParseDuration(u.one("Service", "TimeoutStopSec"))
			if err != nil || stop < tc.minStop {
				t.Errorf("TimeoutStopSec=%q, want at least %v to drain", u.one("Service", "TimeoutStopSec"), tc.minStop)
			}
			envFiles := u.get("Service", "EnvironmentFile")
			if len(envFiles) == 0 || envFiles[0] != "-/etc/wxhub/wxhub.env" {
				t.Errorf("EnvironmentFile=%v, want -/etc/wxhub/wxhub.env first", envFiles)
			}

			exec := u.get("Service", "ExecStart")
			if len(exec) != 1 {
				t.Fatalf("ExecStart %v, want one", exec)
			}
			line := strings.ReplaceAll(exec[0], "%i", tc.instance)
			if strings.Contains(line, "%") {
				t.Fatalf("ExecStart %q: unexpected specifier", line)
			}
			fields := strings.Fields(line)
			if len(fields) < 2 || filepath.Base(fields[0]) != "wxhub" || fields[1] != tc.role {
				t.Fatalf("ExecStart %q, want wxhub %s ...", exec[0], tc.role)
			}
			cfg := loadRoleConfig(t, fields[1:], filepath.Join("systemd", "wxhub.yaml"), map[string]string{})
			if tc.instance != "" && !strings.HasSuffix(cfg.HTTPListen, ":"+tc.instance) {
				t.Errorf("http-listen %q: the template's instance name should be its port", cfg.HTTPListen)
			}
			if !cfg.NATS.Accounts {
				t.Errorf("nats.accounts is off; deploy/nats puts each role in an account of its own")
			}
			if cfg.Replicas != 3 || !strings.Contains(cfg.NATS.URL, ",") {
				t.Errorf("replicas %d, nats url %q: want the 3-node cluster", cfg.Replicas, cfg.NATS.URL)
			}
			if len(cfg.Apps) == 0 || cfg.Apps[0].SecretFile == "" {
				t.Errorf("apps %+v: want at least one with a secret_file", cfg.Apps)
			}
		})
	}
}

func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	var from []string
	var build, entry string
	for _, line := range strings.Split(string(b), "\n") {
		switch f := strings.Fields(line); {
		case len(f) >= 2 && f[0] == "FROM":
			from = append(from, f[1])
		case len(f) >= 2 && f[0] == "RUN" && strings.Contains(line, "go build"):
			build = line
		case len(f) >= 2 && f[0] == "ENTRYPOINT":
			entry = line
		}
	}
	if len(from) != 2 || !strings.HasPrefix(from[0], "golang:1.26") || !strings.Contains(from[1], "distroless/static") {
		t.Errorf("stages %v, want golang:1.26 then distroless/static", from)
	}
	if !strings.Contains(build, "CGO_ENABLED=0") || !strings.Contains(build, "./cmd/wxhub") {
		t.Errorf("build step %q, want a static build of ./cmd/wxhub", build)
	}
	if !strings.Contains(entry, "wxhub") {
		t.Errorf("ENTRYPOINT %q", entry)
	}
}
