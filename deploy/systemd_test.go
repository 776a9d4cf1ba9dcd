package deploy_test

import (
	"bufio"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wxhub/wxhub/internal/config"
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

// unitHardening is the sandbox every wxhub unit has, the same in each.
var unitHardening = map[string][]string{
	"NoNewPrivileges":         {"yes"},
	"ProtectSystem":           {"strict"},
	"ProtectHome":             {"yes"},
	"PrivateTmp":              {"yes"},
	"PrivateDevices":          {"yes"},
	"ProtectKernelTunables":   {"yes"},
	"ProtectKernelModules":    {"yes"},
	"ProtectKernelLogs":       {"yes"},
	"ProtectControlGroups":    {"yes"},
	"ProtectClock":            {"yes"},
	"ProtectHostname":         {"yes"},
	"ProtectProc":             {"invisible"},
	"RestrictNamespaces":      {"yes"},
	"RestrictRealtime":        {"yes"},
	"RestrictSUIDSGID":        {"yes"},
	"LockPersonality":         {"yes"},
	"MemoryDenyWriteExecute":  {"yes"},
	"RestrictAddressFamilies": {"AF_INET AF_INET6 AF_UNIX"},
	"SystemCallArchitectures": {"native"},
	"SystemCallFilter":        {"@system-service", "~@privileged @resources"},
	"CapabilityBoundingSet":   {""},
	"AmbientCapabilities":     {""},
	"UMask":                   {"0077"},
	"User":                    {"wxhub"},
	"Group":                   {"wxhub"},
	"KillSignal":              {"SIGTERM"},
	"KillMode":                {"mixed"},
	"Restart":                 {"on-failure"},
}

// readmeSetup is what deploy/README.md's systemd steps put in /etc/wxhub:
// the env files (printf '...' | install ... /etc/wxhub/X.env) parsed, and
// every file installed from stdin (path → content; a generated key
// stands in for one made by a command).
func readmeSetup(t *testing.T) (envFiles map[string]map[string]string, files map[string]string) {
	t.Helper()
	envFiles, files = map[string]map[string]string{}, map[string]string{}
	printfRE := regexp.MustCompile(`printf '([^']*)' \| install .*/dev/stdin (/etc/wxhub/\S+\.env)`)
	stdinRE := regexp.MustCompile(`install .*/dev/stdin (/etc/wxhub/(?:secrets|clients)/\S+)(?: <<<'([^']*)')?`)
	for _, cmd := range shellCommands(t, "README.md") {
		if m := printfRE.FindStringSubmatch(cmd.line); m != nil {
			env := map[string]string{}
			for _, kv := range strings.Split(m[1], `\n`) {
				if k, v, ok := strings.Cut(kv, "="); ok {
					env[k] = v
				}
			}
			envFiles[m[2]] = env
		} else if m := stdinRE.FindStringSubmatch(cmd.line); m != nil {
			files[m[1]] = m[2]
			if m[2] == "" {
				files[m[1]] = "generated-key-0123456789abcdefghij"
			}
		}
	}
	return envFiles, files
}

func TestSystemdUnits(t *testing.T) {
	envFiles, files := readmeSetup(t)
	cases := []struct {
		file     string
		role     string
		instance string // %i for a template
		minStop  time.Duration
	}{
		{"wxhub-holder.service", "holder", "", 10 * time.Second},
		{"wxhub-worker@.service", "worker", "8101", 60 * time.Second},
		// The longest drain (the longest web login wait accepted) and 5 s
		// to close the ops port.
		{"wxhub-gateway.service", "gateway", "", config.MaxGatewayDrain() + 5*time.Second},
	}
	listens := map[string]string{} // address → who listens there
	for _, tc := range cases {
		u := parseUnit(t, filepath.Join("systemd", tc.file))
		t.Run(tc.file, func(t *testing.T) {
			for k, want := range unitHardening {
				if got := u.get("Service", k); !slices.Equal(got, want) {
					t.Errorf("%s=%q, want %q as in every wxhub unit", k, got, want)
				}
			}
			if u.one("Install", "WantedBy") != "multi-user.target" {
				t.Errorf("WantedBy=%q", u.one("Install", "WantedBy"))
			}
			stop, err := time.ParseDuration(u.one("Service", "TimeoutStopSec"))
			if err != nil || stop < tc.minStop {
				t.Errorf("TimeoutStopSec=%q, want at least %v to drain", u.one("Service", "TimeoutStopSec"), tc.minStop)
			}
			roleEnv := "/etc/wxhub/" + tc.role + ".env"
			if got := u.get("Service", "EnvironmentFile"); !slices.Equal(got, []string{"-/etc/wxhub/wxhub.env", "-" + roleEnv}) {
				t.Errorf("EnvironmentFile=%v, want -/etc/wxhub/wxhub.env then the role's -%s", got, roleEnv)
			}
			// The role's env file as deploy/README.md makes it: this
			// role's NATS login, and only variables the role reads.
			env, ok := envFiles[roleEnv]
			if !ok {
				t.Fatalf("deploy/README.md does not create %s (it makes %v)", roleEnv, slices.Sorted(maps.Keys(envFiles)))
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
			cfg := loadRoleConfig(t, fields[1:], filepath.Join("systemd", "wxhub.yaml"), env)
			if cfg.NATS.User != tc.role || cfg.NATS.Password == "" {
				t.Errorf("NATS login from %s: user %q (password set %v), want %s", roleEnv, cfg.NATS.User, cfg.NATS.Password != "", tc.role)
			}
			if tc.instance != "" && !strings.HasSuffix(cfg.HTTPListen, ":"+tc.instance) {
				t.Errorf("http-listen %q: the template's instance name should be its port", cfg.HTTPListen)
			}
			if !cfg.NATS.Accounts {
				t.Errorf("nats.accounts is off; deploy/nats puts each role in an account of its own")
			}
			if !strings.Contains(cfg.NATS.URL, ",") {
				t.Errorf("nats url %q: want the 3-node cluster", cfg.NATS.URL)
			}
			if len(cfg.Apps) == 0 || cfg.Apps[0].SecretFile == "" {
				t.Errorf("apps %+v: want at least one with a secret_file", cfg.Apps)
			}
			// Every secret file the role reads is one the README's steps
			// install, and resolves (the holder needs every AppSecret).
			resolveFiles(t, tc.role, cfg, maps.Clone(files), env)
			if err := cfg.Validate(tc.role == "holder"); err != nil {
				t.Errorf("after resolving the secrets: %v", err)
			}
			if tc.role == "gateway" && stop < cfg.GatewayDrain() {
				t.Errorf("TimeoutStopSec=%v: shorter than the gateway's drain (%v)", stop, cfg.GatewayDrain())
			}
			for _, addr := range []string{cfg.HTTPListen, cfg.Gateway.Listen} {
				if addr == cfg.Gateway.Listen && tc.role != "gateway" {
					continue
				}
				if other, dup := listens[addr]; dup {
					t.Errorf("%s listens on %s, as %s does: one host runs them all", tc.file, addr, other)
				}
				listens[addr] = tc.file
			}
			if tc.role == "gateway" {
				checkGatewayConfig(t, cfg)
			}
		})
	}
}

// shellCommand is one command of a sh block of a Markdown file, with the
// variables an earlier `export` of the block set.
type shellCommand struct {
	line string
	env  map[string]string
}

// shellCommands returns the commands of the ```sh blocks of a Markdown
// file: continuation lines joined, comments dropped.
func shellCommands(t *testing.T, file string) []shellCommand {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var cmds []shellCommand
	for _, m := range regexp.MustCompile("(?s)```sh\n(.*?)```").FindAllStringSubmatch(string(b), -1) {
		exported := map[string]string{}
		for _, line := range strings.Split(strings.ReplaceAll(m[1], "\\\n", " "), "\n") {
			if i := strings.Index(line, " # "); i >= 0 {
				line = line[:i]
			}
			line = strings.TrimSpace(line)
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			if rest, ok := strings.CutPrefix(line, "export "); ok {
				for _, kv := range strings.Fields(rest) {
					if k, v, ok := strings.Cut(kv, "="); ok {
						exported[k] = v
					}
				}
				continue
			}
			cmds = append(cmds, shellCommand{line: line, env: maps.Clone(exported)})
		}
	}
	return cmds
}

// TestDeploymentCommandsInTheDocs: every `wxhub holder|worker|gateway|
// provision` command the deployment docs show loads with wxhub's own
// loader (flags that exist for that subcommand, environment variables it
// reads, a valid configuration) and runs on the shipped NATS layout as
// its own user; /etc/wxhub/wxhub.yaml is deploy/systemd/wxhub.yaml.
func TestDeploymentCommandsInTheDocs(t *testing.T) {
	docs := []string{"README.md", "../README.md", "../docs/gateway.md", "../docs/operations.md"}
	seen := map[string]int{}
	for _, doc := range docs {
		for _, cmd := range shellCommands(t, doc) {
			fields := strings.Fields(cmd.line)
			env := cmd.env
			for len(fields) > 0 && strings.Contains(fields[0], "=") && !strings.HasPrefix(fields[0], "-") {
				k, v, _ := strings.Cut(fields[0], "=")
				env[k] = v
				fields = fields[1:]
			}
			if len(fields) < 2 || (fields[0] != "wxhub" && fields[0] != "/usr/local/bin/wxhub") {
				continue
			}
			role := fields[1]
			if _, ok := roleFlags[role]; !ok {
				continue
			}
			seen[role]++
			t.Run(doc+": "+strings.Join(fields, " "), func(t *testing.T) {
				args := slices.Clone(fields[1:])
				configFile := ""
				for i, a := range args {
					if a == "--config" && i+1 < len(args) {
						if args[i+1] != "/etc/wxhub/wxhub.yaml" {
							t.Fatalf("--config %s: the docs install /etc/wxhub/wxhub.yaml", args[i+1])
						}
						configFile = filepath.Join("systemd", "wxhub.yaml")
					}
				}
				cfg := loadRoleConfig(t, args, configFile, env)
				want := role
				if role == "provision" {
					want = "admin"
				}
				if cfg.NATS.User != "" && cfg.NATS.User != want {
					t.Errorf("NATS user %q, want %s", cfg.NATS.User, want)
				}
				if !cfg.NATS.Accounts {
					t.Error("not on the accounts layout of the shipped NATS config (--nats-accounts, or the shipped wxhub.yaml)")
				}
				if role == "provision" && cfg.Replicas != 3 {
					t.Errorf("replicas %d, want 3 on the cluster", cfg.Replicas)
				}
			})
		}
	}
	for _, role := range []string{"holder", "worker", "provision"} {
		if seen[role] == 0 {
			t.Errorf("no wxhub %s command found in %v (the parser may be broken)", role, docs)
		}
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
