package deploy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/conf"
	"github.com/nats-io/nats-server/v2/server"
	"go.yaml.in/yaml/v3"
	"golang.org/x/crypto/bcrypt"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/gateway"
	"github.com/wxhub/wxhub/internal/config"
)

// documentedFlags are the flags deployment files may use: each is in
// README.md's configuration table or in `wxhub <role> -h`.
var documentedFlags = []string{
	"config", "nats-url", "nats-creds", "nats-nkey", "nats-user", "nats-password",
	"nats-token", "nats-tls-ca", "nats-tls-cert", "nats-tls-key", "nats-accounts", "prefix", "replicas",
	"wechat-base-url", "http-listen", "log-format", "log-level", "app",
	"holder-id", "lease-ttl", "refresh-margin", "quota-reserve", "quota-daily-limit",
	"concurrency", "max-deliver", "ack-wait",
	"gateway-listen", "gateway-tls-cert", "gateway-tls-key", "client",
	"max-ack-pending", "timeout",
}

// roleFlags are the flag groups of each subcommand the deployment files
// run: cmd/wxhub's own (config.Command*).
var roleFlags = map[string]config.Roles{
	"holder":    config.CommandHolder,
	"worker":    config.CommandWorker,
	"gateway":   config.CommandGateway,
	"provision": config.CommandProvision,
}

// roleExtraFlags are the flags a subcommand adds to its groups, as
// cmd/wxhub registers them.
var roleExtraFlags = map[string]func(fs *flag.FlagSet){
	"provision": new(config.ProvisionOptions).AddFlags,
}

// yamlDocs decodes every document of a YAML file.
func yamlDocs(t *testing.T, file string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var docs []map[string]any
	for {
		var d map[string]any
		err := dec.Decode(&d)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: document %d: %v", file, len(docs)+1, err)
		}
		if d != nil {
			docs = append(docs, d)
		}
	}
	if len(docs) == 0 {
		t.Fatalf("%s: no YAML documents", file)
	}
	return docs
}

// decodeInto re-decodes a generic document into a typed view.
func decodeInto(t *testing.T, doc map[string]any, v any) {
	t.Helper()
	b, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatal(err)
	}
}

// loadRoleConfig runs wxhub's own configuration loader on a command line
// (args[0] the subcommand) the way `wxhub <role>` does, with the file that
// --config names replaced by configFile and env as the environment. Every
// WXHUB_* variable in env must be one the subcommand reads: a flag of its
// own, or the secret of an app or client it has.
func loadRoleConfig(t *testing.T, args []string, configFile string, env map[string]string) *config.Config {
	t.Helper()
	if len(args) == 0 {
		t.Fatal("no subcommand")
	}
	role := args[0]
	roles, ok := roleFlags[role]
	if !ok {
		t.Fatalf("subcommand %q, want one of %v", role, slices.Sorted(maps.Keys(roleFlags)))
	}
	rest := slices.Clone(args[1:])
	for i, a := range rest {
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if strings.HasPrefix(a, "-") && !slices.Contains(documentedFlags, name) {
			t.Errorf("%s: flag --%s is not a documented wxhub flag", role, name)
		}
		if a == "--config" && i+1 < len(rest) {
			rest[i+1] = configFile
		}
	}
	fs := flag.NewFlagSet("wxhub "+role, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	if extra := roleExtraFlags[role]; extra != nil {
		extra(fs)
	}
	cfg, err := config.Load(fs, roles, rest, func(k string) string { return env[k] })
	if err != nil {
		t.Fatalf("wxhub %s: %v", strings.Join(args, " "), err)
	}
	if fs.NArg() > 0 {
		t.Fatalf("wxhub %s: stray argument %q", role, fs.Arg(0))
	}
	if err := cfg.Validate(false); err != nil {
		t.Fatalf("wxhub %s: invalid configuration: %v", role, err)
	}
	checkEnvNames(t, role, fs, cfg, env)
	return cfg
}

// checkEnvNames fails for a WXHUB_* variable that wxhub <role> does not
// read (it would be ignored silently).
func checkEnvNames(t *testing.T, role string, fs *flag.FlagSet, cfg *config.Config, env map[string]string) {
	t.Helper()
	read := map[string]bool{"WXHUB_CONFIG": true}
	fs.VisitAll(func(f *flag.Flag) {
		switch f.Name {
		case "app":
			read["WXHUB_APPS"] = true
		case "client":
			read["WXHUB_CLIENTS"] = true
		default:
			read[config.EnvName(f.Name)] = true
		}
	})
	if role != "provision" { // provision reads no secrets
		for _, a := range cfg.Apps {
			read["WXHUB_SECRET_"+strings.ToUpper(a.AppID)] = true
		}
	}
	if role == "gateway" {
		for _, c := range cfg.Gateway.Clients {
			read[config.ClientKeyEnv(c.Name)] = true
		}
	}
	if role == "worker" {
		read["WXHUB_VAULT_KEYS"] = true
	}
	for k := range env {
		if strings.HasPrefix(k, "WXHUB_") && !read[k] {
			t.Errorf("wxhub %s does not read the environment variable %s", role, k)
		}
	}
}

// resolveFiles copies the secret files of cfg (apps' secret_file, the
// gateway clients' key_file) from files (path in the pod or host →
// content) into a temporary folder, points cfg at the copies and resolves
// the secrets the way the role does: a file that is not in files fails.
func resolveFiles(t *testing.T, role string, cfg *config.Config, files map[string]string, env map[string]string) {
	t.Helper()
	// The example Secrets ship REPLACE-WITH-... placeholders, which wxhub
	// refuses: first as shipped (refused if any is read), then with
	// stand-ins for the real values the operator creates (deploy/README.md).
	shipped := *cfg
	shipped.Apps = slices.Clone(cfg.Apps)
	shipped.Gateway.Clients = slices.Clone(cfg.Gateway.Clients)
	if placeholders, err := resolveCopies(t, role, &shipped, files, env, false); placeholders > 0 && (err == nil || !strings.Contains(err.Error(), config.PlaceholderPrefix+"... placeholder")) {
		t.Errorf("wxhub %s with the %d placeholder(s) of the example Secrets: err = %v, want them refused", role, placeholders, err)
	}
	if _, err := resolveCopies(t, role, cfg, files, env, true); err != nil {
		t.Errorf("wxhub %s: %v", role, err)
	}
}

// resolveCopies copies the secret files cfg reads out of files (the
// mounted files, by path) and resolves cfg's secrets and client keys from
// them and env, returning the first error and how many placeholders were
// read; with standIns each placeholder is replaced by a real-looking
// value first.
func resolveCopies(t *testing.T, role string, cfg *config.Config, files map[string]string, env map[string]string, standIns bool) (placeholders int, err error) {
	t.Helper()
	dir := t.TempDir()
	n := 0
	copyOf := func(what, p string) string {
		t.Helper()
		content, ok := files[p]
		if !ok {
			t.Errorf("%s %s is not there (have %v)", what, p, slices.Sorted(maps.Keys(files)))
			return p
		}
		if config.IsPlaceholder(strings.TrimSpace(content)) {
			placeholders++
			if standIns {
				content = fmt.Sprintf("stand-in-for-the-real-value-%d", n)
			}
		}
		n++
		c := filepath.Join(dir, fmt.Sprintf("file%d", n))
		if err := os.WriteFile(c, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return c
	}
	for i, a := range cfg.Apps {
		if a.SecretFile != "" {
			cfg.Apps[i].SecretFile = copyOf("apps["+a.AppID+"].secret_file", a.SecretFile)
		}
	}
	getenv := func(k string) string { return env[k] }
	err = cfg.ResolveSecrets(getenv)
	if role != "gateway" {
		return placeholders, err
	}
	for i, c := range cfg.Gateway.Clients {
		if c.KeyFile != "" && env[config.ClientKeyEnv(c.Name)] == "" {
			cfg.Gateway.Clients[i].KeyFile = copyOf("gateway.clients["+c.Name+"].key_file", c.KeyFile)
		}
	}
	if kerr := cfg.ResolveClientKeys(getenv); err == nil {
		err = kerr
	}
	return placeholders, err
}

// checkGatewayConfig validates cfg the way `wxhub gateway` does
// (gateway.Config.Validate, after the secrets are resolved) and checks
// what a deployed gateway needs: clients, and a listen address other
// hosts (or pods) can reach unless it is meant for a local proxy.
func checkGatewayConfig(t *testing.T, cfg *config.Config) {
	t.Helper()
	gc := gateway.Config{Tokens: noTokens{}, BaseURL: cfg.WeChatBaseURL, Apps: cfg.GatewayApps(), Clients: cfg.GatewayClients(),
		Listen: cfg.Gateway.Listen, TLSCert: cfg.Gateway.TLSCert, TLSKey: cfg.Gateway.TLSKey}
	if err := gc.Validate(); err != nil {
		t.Errorf("wxhub gateway: %v", err)
	}
	for _, c := range cfg.Gateway.Clients {
		if c.KeyFile == "" {
			t.Errorf("client %s: no key_file (keys never go inline in a shipped file)", c.Name)
		}
	}
	if _, _, err := net.SplitHostPort(cfg.Gateway.Listen); err != nil {
		t.Errorf("gateway.listen %q: %v", cfg.Gateway.Listen, err)
	}
}

// noTokens is a gateway.Tokens with no token: enough to validate a
// configuration.
type noTokens struct{}

func (noTokens) Current(string) (events.TokenRecord, bool) { return events.TokenRecord{}, false }
func (noTokens) WaitNewer(ctx context.Context, _ string, _ uint64) (events.TokenRecord, error) {
	return events.TokenRecord{}, ctx.Err()
}

// helmUsers are the users merged into the NATS chart's config
// (nats-values.yaml): name → bcrypt hash.
func helmUsers(t *testing.T) map[string]string {
	t.Helper()
	o, _ := helmOptions(t)
	m := map[string]string{}
	for _, u := range o.Users {
		m[u.Username] = u.Password
	}
	return m
}

// helmOptions loads the merge block of nats-values.yaml with nats-server's
// own loader; it returns the options and the block as NATS config text.
func helmOptions(t *testing.T) (*server.Options, []byte) {
	t.Helper()
	var v struct {
		Config struct {
			Merge map[string]any `yaml:"merge"`
		} `yaml:"config"`
	}
	decodeInto(t, yamlDocs(t, "kubernetes/nats-values.yaml")[0], &v)
	// JSON is valid NATS configuration syntax.
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // NATS knows no \u escapes: keep ">" as is
	if err := enc.Encode(v.Config.Merge); err != nil {
		t.Fatal(err)
	}
	merged := buf.Bytes()
	file := filepath.Join(t.TempDir(), "merged.conf")
	if err := os.WriteFile(file, merged, 0o600); err != nil {
		t.Fatal(err)
	}
	o, err := server.ProcessConfigFile(file)
	if err != nil {
		t.Fatalf("config.merge as nats.conf: %v", err)
	}
	return o, merged
}

func TestYAMLFilesParse(t *testing.T) {
	var files []string
	err := filepath.WalkDir(".", func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && (strings.HasSuffix(p, ".yaml") || strings.HasSuffix(p, ".yml")) {
			files = append(files, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 8 {
		t.Fatalf("found only %v", files)
	}
	for _, f := range files {
		t.Run(f, func(t *testing.T) {
			docs := yamlDocs(t, f)
			if filepath.Dir(f) != "kubernetes" || filepath.Base(f) == "nats-values.yaml" {
				return
			}
			for i, d := range docs {
				var obj k8sObject
				decodeInto(t, d, &obj)
				if obj.APIVersion == "" || obj.Kind == "" {
					t.Errorf("document %d: apiVersion %q, kind %q", i+1, obj.APIVersion, obj.Kind)
				}
				if obj.Metadata.Name == "" && obj.Kind != "Kustomization" {
					t.Errorf("document %d (%s): no metadata.name", i+1, obj.Kind)
				}
			}
		})
	}
}

// k8sObject is the part of a Kubernetes object these tests look at.
type k8sObject struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name        string            `yaml:"name"`
		Namespace   string            `yaml:"namespace"`
		Labels      map[string]string `yaml:"labels"`
		Annotations map[string]string `yaml:"annotations"`
	} `yaml:"metadata"`
	Data       map[string]string `yaml:"data"`
	StringData map[string]string `yaml:"stringData"`
	Spec       struct {
		// Deployment
		Replicas *int `yaml:"replicas"`
		Selector struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
		Template struct {
			Metadata struct {
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"metadata"`
			Spec podSpec `yaml:"spec"`
		} `yaml:"template"`
		// Job
		BackoffLimit            *int `yaml:"backoffLimit"`
		TTLSecondsAfterFinished *int `yaml:"ttlSecondsAfterFinished"`
		PodFailurePolicy        struct {
			Rules []podFailureRule `yaml:"rules"`
		} `yaml:"podFailurePolicy"`
		// HorizontalPodAutoscaler
		ScaleTargetRef struct {
			Kind string `yaml:"kind"`
			Name string `yaml:"name"`
		} `yaml:"scaleTargetRef"`
		MinReplicas int `yaml:"minReplicas"`
		MaxReplicas int `yaml:"maxReplicas"`
		Metrics     []struct {
			Type     string `yaml:"type"`
			Resource struct {
				Name string `yaml:"name"`
			} `yaml:"resource"`
		} `yaml:"metrics"`
		// PodDisruptionBudget
		MinAvailable any `yaml:"minAvailable"`
		// Service (its selector is a plain map, unlike the others)
		ClusterIP string `yaml:"clusterIP"`
		Ports     []struct {
			Name       string `yaml:"name"`
			Port       int    `yaml:"port"`
			TargetPort any    `yaml:"targetPort"`
		} `yaml:"ports"`
	} `yaml:"spec"`
	raw map[string]any
}

// podFailureRule is one rule of a Job's podFailurePolicy.
type podFailureRule struct {
	Action      string `yaml:"action"`
	OnExitCodes struct {
		ContainerName string `yaml:"containerName"`
		Operator      string `yaml:"operator"`
		Values        []int  `yaml:"values"`
	} `yaml:"onExitCodes"`
}

// serviceSelector is a Service's spec.selector (a plain map).
func (o *k8sObject) serviceSelector(t *testing.T) map[string]string {
	t.Helper()
	sel := map[string]string{}
	if spec, ok := o.raw["spec"].(map[string]any); ok {
		if m, ok := spec["selector"].(map[string]any); ok {
			decodeInto(t, m, &sel)
		}
	}
	return sel
}

type podSpec struct {
	TerminationGracePeriodSeconds int    `yaml:"terminationGracePeriodSeconds"`
	RestartPolicy                 string `yaml:"restartPolicy"`
	AutomountServiceAccountToken  *bool  `yaml:"automountServiceAccountToken"`
	SecurityContext               struct {
		RunAsNonRoot   bool `yaml:"runAsNonRoot"`
		SeccompProfile struct {
			Type string `yaml:"type"`
		} `yaml:"seccompProfile"`
	} `yaml:"securityContext"`
	Affinity struct {
		PodAntiAffinity map[string]any `yaml:"podAntiAffinity"`
	} `yaml:"affinity"`
	Containers []container `yaml:"containers"`
	Volumes    []volume    `yaml:"volumes"`
}

type container struct {
	Name  string   `yaml:"name"`
	Image string   `yaml:"image"`
	Args  []string `yaml:"args"`
	Env   []struct {
		Name      string `yaml:"name"`
		Value     string `yaml:"value"`
		ValueFrom struct {
			SecretKeyRef struct {
				Name string `yaml:"name"`
				Key  string `yaml:"key"`
			} `yaml:"secretKeyRef"`
			FieldRef struct {
				FieldPath string `yaml:"fieldPath"`
			} `yaml:"fieldRef"`
		} `yaml:"valueFrom"`
	} `yaml:"env"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	Lifecycle struct {
		PreStop struct {
			Sleep struct {
				Seconds int `yaml:"seconds"`
			} `yaml:"sleep"`
		} `yaml:"preStop"`
	} `yaml:"lifecycle"`
	ReadinessProbe probe `yaml:"readinessProbe"`
	LivenessProbe  probe `yaml:"livenessProbe"`
	Resources      struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	SecurityContext struct {
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
		ReadOnlyRootFilesystem   bool  `yaml:"readOnlyRootFilesystem"`
		Capabilities             struct {
			Drop []string `yaml:"drop"`
		} `yaml:"capabilities"`
	} `yaml:"securityContext"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
		SubPath   string `yaml:"subPath"`
	} `yaml:"volumeMounts"`
}

// port returns the containerPort named name (0: none).
func (c container) port(name string) int {
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	return 0
}

type volume struct {
	Name      string `yaml:"name"`
	ConfigMap struct {
		Name string `yaml:"name"`
	} `yaml:"configMap"`
	Secret struct {
		SecretName string `yaml:"secretName"`
	} `yaml:"secret"`
}

type probe struct {
	HTTPGet struct {
		Path string `yaml:"path"`
		Port any    `yaml:"port"`
	} `yaml:"httpGet"`
}

// kustomizeObjects loads every manifest the kustomization lists.
func kustomizeObjects(t *testing.T) map[string]*k8sObject {
	t.Helper()
	var kust struct {
		Namespace string   `yaml:"namespace"`
		Resources []string `yaml:"resources"`
	}
	decodeInto(t, yamlDocs(t, "kubernetes/kustomization.yaml")[0], &kust)
	if kust.Namespace != "wxhub" {
		t.Errorf("kustomization namespace %q, want wxhub", kust.Namespace)
	}
	// Every manifest in the folder is listed (Helm values are not one).
	all, _ := filepath.Glob("kubernetes/*.yaml")
	for _, f := range all {
		base := filepath.Base(f)
		if base != "kustomization.yaml" && base != "nats-values.yaml" && !slices.Contains(kust.Resources, base) {
			t.Errorf("kustomization.yaml does not list %s", base)
		}
	}
	objs := map[string]*k8sObject{}
	for _, r := range kust.Resources {
		for _, d := range yamlDocs(t, path.Join("kubernetes", r)) {
			o := &k8sObject{raw: d}
			decodeInto(t, d, o)
			key := o.Kind + "/" + o.Metadata.Name
			if _, dup := objs[key]; dup {
				t.Errorf("%s defined twice", key)
			}
			if o.Kind != "Namespace" && o.Metadata.Namespace != "wxhub" {
				t.Errorf("%s: namespace %q, want wxhub", key, o.Metadata.Namespace)
			}
			objs[key] = o
		}
	}
	return objs
}

func subset(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func TestKubernetesManifests(t *testing.T) {
	objs := kustomizeObjects(t)
	get := func(t *testing.T, key string) *k8sObject {
		t.Helper()
		o := objs[key]
		if o == nil {
			t.Fatalf("%s missing", key)
		}
		return o
	}
	cm := get(t, "ConfigMap/wxhub-config")
	cfgFile := filepath.Join(t.TempDir(), "wxhub.yaml")
	if err := os.WriteFile(cfgFile, []byte(cm.Data["wxhub.yaml"]), 0o600); err != nil {
		t.Fatal(err)
	}
	natsUsers := helmUsers(t)

	// podEnv is a container's environment with Secret references
	// resolved; a NATS password must be the one whose hash
	// nats-values.yaml gives its user.
	podEnv := func(t *testing.T, c container, fieldValue string) map[string]string {
		t.Helper()
		env := map[string]string{}
		for _, e := range c.Env {
			v := e.Value
			if ref := e.ValueFrom.SecretKeyRef; ref.Name != "" {
				var ok bool
				if v, ok = get(t, "Secret/"+ref.Name).StringData[ref.Key]; !ok {
					t.Errorf("env %s: Secret %s has no key %s", e.Name, ref.Name, ref.Key)
				}
			}
			if e.ValueFrom.FieldRef.FieldPath != "" {
				v = fieldValue
			}
			env[e.Name] = v
		}
		if user := env["WXHUB_NATS_USER"]; user != "" {
			hash, ok := natsUsers[user]
			if !ok {
				t.Errorf("NATS user %s is not in nats-values.yaml", user)
			} else if err := bcrypt.CompareHashAndPassword([]byte(hash), []byte(env["WXHUB_NATS_PASSWORD"])); err != nil {
				t.Errorf("NATS user %s: the password from the Secret does not match its hash in nats-values.yaml: %v", user, err)
			}
		}
		return env
	}
	// mountedFiles are the files a container sees from its ConfigMap and
	// Secret volumes: path → content.
	mountedFiles := func(t *testing.T, ps podSpec, c container) map[string]string {
		t.Helper()
		files := map[string]string{}
		for _, m := range c.VolumeMounts {
			i := slices.IndexFunc(ps.Volumes, func(v volume) bool { return v.Name == m.Name })
			if i < 0 {
				t.Errorf("volumeMount %s: no such volume", m.Name)
				continue
			}
			var data map[string]string
			switch vol := ps.Volumes[i]; {
			case vol.ConfigMap.Name != "":
				data = get(t, "ConfigMap/"+vol.ConfigMap.Name).Data
			case vol.Secret.SecretName != "":
				data = get(t, "Secret/"+vol.Secret.SecretName).StringData
			}
			for k, v := range data {
				if m.SubPath == k {
					files[m.MountPath] = v
				} else if m.SubPath == "" {
					files[path.Join(m.MountPath, k)] = v
				}
			}
		}
		if _, ok := files["/etc/wxhub/wxhub.yaml"]; !ok {
			t.Errorf("/etc/wxhub/wxhub.yaml is not mounted (mounted: %v)", slices.Sorted(maps.Keys(files)))
		}
		return files
	}
	// hardened: the pod and its one container run like every wxhub pod.
	hardened := func(t *testing.T, ps podSpec) container {
		t.Helper()
		if !ps.SecurityContext.RunAsNonRoot || ps.SecurityContext.SeccompProfile.Type != "RuntimeDefault" {
			t.Errorf("pod securityContext %+v: want runAsNonRoot and the RuntimeDefault seccomp profile", ps.SecurityContext)
		}
		if ps.AutomountServiceAccountToken == nil || *ps.AutomountServiceAccountToken {
			t.Error("automountServiceAccountToken is not false: wxhub never calls the Kubernetes API")
		}
		if len(ps.Containers) != 1 {
			t.Fatalf("%d containers, want 1", len(ps.Containers))
		}
		c := ps.Containers[0]
		if !strings.HasPrefix(c.Image, "wxhub:") {
			t.Errorf("image %q", c.Image)
		}
		sc := c.SecurityContext
		if !sc.ReadOnlyRootFilesystem || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || !slices.Equal(sc.Capabilities.Drop, []string{"ALL"}) {
			t.Errorf("container securityContext %+v", sc)
		}
		if c.Resources.Requests["cpu"] == "" || c.Resources.Requests["memory"] == "" || c.Resources.Limits["memory"] == "" {
			t.Errorf("resources %+v: want cpu/memory requests (the HPA needs cpu) and a memory limit", c.Resources)
		}
		return c
	}
	// selecting lists the Services and PodDisruptionBudgets whose selector
	// matches labels.
	selecting := func(t *testing.T, labels map[string]string) (svcs, pdbs []*k8sObject) {
		t.Helper()
		for _, o := range objs {
			switch o.Kind {
			case "PodDisruptionBudget":
				if subset(o.Spec.Selector.MatchLabels, labels) {
					pdbs = append(pdbs, o)
				}
			case "Service":
				if subset(o.serviceSelector(t), labels) {
					svcs = append(svcs, o)
				}
			}
		}
		return svcs, pdbs
	}
	// targets reports whether a Service port's targetPort is c's port
	// named name (by name or number).
	targets := func(target any, c container, name string) bool {
		p := c.port(name)
		return p != 0 && (target == name || target == p)
	}

	for _, tc := range []struct {
		name     string
		min, max int
	}{{"wxhub-worker", 2, 20}, {"wxhub-gateway", 2, 10}} {
		t.Run("HPA scales "+tc.name+" on CPU", func(t *testing.T) {
			t.Parallel()
			h := get(t, "HorizontalPodAutoscaler/"+tc.name)
			if h.APIVersion != "autoscaling/v2" {
				t.Errorf("apiVersion %s", h.APIVersion)
			}
			ref := h.Spec.ScaleTargetRef
			if ref.Kind != "Deployment" || objs["Deployment/"+ref.Name] == nil || ref.Name != tc.name {
				t.Errorf("scaleTargetRef %s/%s, want Deployment/%s", ref.Kind, ref.Name, tc.name)
			}
			if h.Spec.MinReplicas != tc.min || h.Spec.MaxReplicas != tc.max {
				t.Errorf("min %d max %d, want %d and %d", h.Spec.MinReplicas, h.Spec.MaxReplicas, tc.min, tc.max)
			}
			if len(h.Spec.Metrics) != 1 || h.Spec.Metrics[0].Resource.Name != "cpu" {
				t.Errorf("metrics %+v, want cpu", h.Spec.Metrics)
			}
		})
	}

	roles := []struct {
		role     string
		replicas int // 0: the HPA's
		minGrace int // terminationGracePeriodSeconds to drain
	}{
		{"holder", 2, 30},
		{"worker", 0, 60},
		// The longest drain (config.MaxGatewayDrain: the longest web
		// login wait accepted) and 5 s to close the ops port; the preStop
		// pause comes on top.
		{"gateway", 0, int((config.MaxGatewayDrain() + 5*time.Second) / time.Second)},
	}
	for _, tc := range roles {
		t.Run(tc.role, func(t *testing.T) {
			t.Parallel()
			role := tc.role
			d := get(t, "Deployment/wxhub-"+role)
			switch r := d.Spec.Replicas; {
			case tc.replicas != 0 && (r == nil || *r != tc.replicas):
				t.Errorf("replicas %v, want %d", r, tc.replicas)
			case tc.replicas == 0 && r != nil:
				t.Errorf("replicas %d: the HPA owns the count, and a replicas field resets it on every kubectl apply", *r)
			}
			pod := d.Spec.Template
			if !subset(d.Spec.Selector.MatchLabels, pod.Metadata.Labels) {
				t.Errorf("selector %v does not match pod labels %v", d.Spec.Selector.MatchLabels, pod.Metadata.Labels)
			}
			ps := pod.Spec
			c := hardened(t, ps)
			preStop := c.Lifecycle.PreStop.Sleep.Seconds
			if ps.TerminationGracePeriodSeconds < tc.minGrace+preStop {
				t.Errorf("terminationGracePeriodSeconds %d, want >= %d (preStop %d s, then the drain)", ps.TerminationGracePeriodSeconds, tc.minGrace+preStop, preStop)
			}
			if len(ps.Affinity.PodAntiAffinity) == 0 {
				t.Error("no podAntiAffinity")
			}
			if pod.Metadata.Annotations["prometheus.io/scrape"] != "true" || pod.Metadata.Annotations["prometheus.io/port"] != "8090" {
				t.Errorf("prometheus annotations %v", pod.Metadata.Annotations)
			}
			if c.ReadinessProbe.HTTPGet.Path != "/readyz" || c.LivenessProbe.HTTPGet.Path != "/healthz" {
				t.Errorf("probes %q/%q, want /readyz and /healthz", c.ReadinessProbe.HTTPGet.Path, c.LivenessProbe.HTTPGet.Path)
			}
			// The gateway's readiness is its front's (can it serve a
			// token?), which holds through a NATS outage: the ops port's
			// /readyz fails then, and every pod would leave the Service.
			readyPort, readyNum := "http", 8090
			if role == "gateway" {
				readyPort, readyNum = "gateway", 8092
			}
			if !targets(c.ReadinessProbe.HTTPGet.Port, c, readyPort) || c.port(readyPort) != readyNum {
				t.Errorf("readiness probe port %v: want the container port %s (%d)", c.ReadinessProbe.HTTPGet.Port, readyPort, readyNum)
			}
			if !targets(c.LivenessProbe.HTTPGet.Port, c, "http") || c.port("http") != 8090 {
				t.Errorf("liveness probe port %v: want the container port http (8090)", c.LivenessProbe.HTTPGet.Port)
			}
			if len(c.Args) == 0 || c.Args[0] != role {
				t.Fatalf("args %v, want the %s subcommand first", c.Args, role)
			}

			env := podEnv(t, c, "pod-"+role)
			// Least privilege: a role's pod reads its own NATS password,
			// never the admin's (a Secret of its own, for the Job only).
			for _, e := range c.Env {
				if ref := e.ValueFrom.SecretKeyRef; ref.Name == "wxhub-nats-admin" || (ref.Name == "wxhub-nats" && ref.Key != role+"-password") {
					t.Errorf("env %s reads %s/%s: a %s pod needs only %s-password", e.Name, ref.Name, ref.Key, role, role)
				}
			}
			cfg := loadRoleConfig(t, c.Args, cfgFile, env)
			if !strings.HasSuffix(cfg.HTTPListen, ":8090") || strings.HasPrefix(cfg.HTTPListen, "127.") {
				t.Errorf("http-listen %q: probes and Prometheus need :8090 on the pod IP", cfg.HTTPListen)
			}
			if !cfg.NATS.Accounts {
				t.Errorf("%s: nats.accounts is off; the shipped NATS config puts each role in an account of its own", role)
			}
			if cfg.NATS.User != role || cfg.NATS.Password == "" {
				t.Errorf("NATS login %q (password set %v), want user %s", cfg.NATS.User, cfg.NATS.Password != "", role)
			}
			if len(cfg.Apps) == 0 {
				t.Error("no apps configured")
			}
			// Every secret file the role reads is mounted, from a Secret
			// of the kustomization, and resolves (the holder needs every
			// AppSecret).
			resolveFiles(t, role, cfg, mountedFiles(t, ps, c), env)
			if err := cfg.Validate(role == "holder"); err != nil {
				t.Errorf("after resolving the secrets: %v", err)
			}
			if drain := cfg.GatewayDrain(); role == "gateway" && time.Duration(ps.TerminationGracePeriodSeconds-preStop)*time.Second < drain {
				t.Errorf("terminationGracePeriodSeconds %d: after the preStop pause (%d s) less than the gateway's drain (%v)", ps.TerminationGracePeriodSeconds, preStop, drain)
			}

			// A PodDisruptionBudget and a headless metrics Service cover
			// the pods.
			svcs, pdbs := selecting(t, pod.Metadata.Labels)
			metrics := slices.ContainsFunc(svcs, func(o *k8sObject) bool {
				return o.Spec.ClusterIP == "None" && len(o.Spec.Ports) > 0 && o.Spec.Ports[0].Port == 8090 && targets(o.Spec.Ports[0].TargetPort, c, "http")
			})
			if len(pdbs) != 1 || !metrics {
				t.Errorf("%d PodDisruptionBudgets (want 1), metrics Service on 8090 %v", len(pdbs), metrics)
			}

			if role != "gateway" {
				return
			}
			checkGatewayConfig(t, cfg)
			host, port, _ := net.SplitHostPort(cfg.Gateway.Listen)
			if host != "" && host != "0.0.0.0" && host != "::" {
				t.Errorf("gateway.listen %q: the Service needs the pod IP", cfg.Gateway.Listen)
			}
			if c.port("gateway") == 0 || port != fmt.Sprint(c.port("gateway")) {
				t.Errorf("gateway.listen %q, container port gateway %d: want the same port", cfg.Gateway.Listen, c.port("gateway"))
			}
			if preStop < 1 {
				t.Error("no preStop pause: the Service would still send new connections to a pod that stopped accepting them")
			}
			// The SDK-facing Service: a virtual IP over the ready pods'
			// gateway port.
			relay := get(t, "Service/wxhub-gateway")
			if !slices.Contains(svcs, relay) {
				t.Errorf("Service wxhub-gateway selects %v, not the pod labels %v", relay.serviceSelector(t), pod.Metadata.Labels)
			}
			if relay.Spec.ClusterIP == "None" || len(relay.Spec.Ports) != 1 || !targets(relay.Spec.Ports[0].TargetPort, c, "gateway") {
				t.Errorf("Service wxhub-gateway %+v: want a ClusterIP Service to the container port gateway", relay.Spec.Ports)
			}
		})
	}

	t.Run("provision Job", func(t *testing.T) {
		t.Parallel()
		j := get(t, "Job/wxhub-provision")
		if j.APIVersion != "batch/v1" {
			t.Errorf("apiVersion %s", j.APIVersion)
		}
		if b := j.Spec.BackoffLimit; b == nil || *b < 1 {
			t.Errorf("backoffLimit %v: want retries while NATS starts", b)
		}
		if ttl := j.Spec.TTLSecondsAfterFinished; ttl == nil || *ttl < 600 {
			t.Errorf("ttlSecondsAfterFinished %v: want the finished Job removed, after its logs could be read", ttl)
		}
		ps := j.Spec.Template.Spec
		if ps.RestartPolicy != "Never" {
			t.Errorf("restartPolicy %q, want Never (a podFailurePolicy needs it)", ps.RestartPolicy)
		}
		c := hardened(t, ps)
		// A usage or configuration error (wxhub's exit status 2) fails
		// the Job at once instead of being retried.
		fails := slices.ContainsFunc(j.Spec.PodFailurePolicy.Rules, func(r podFailureRule) bool {
			return r.Action == "FailJob" && r.OnExitCodes.ContainerName == c.Name && r.OnExitCodes.Operator == "In" && slices.Equal(r.OnExitCodes.Values, []int{2})
		})
		if !fails {
			t.Errorf("podFailurePolicy %+v: want FailJob on exit status 2 of container %s", j.Spec.PodFailurePolicy, c.Name)
		}
		if len(c.Args) == 0 || c.Args[0] != "provision" {
			t.Fatalf("args %v, want the provision subcommand first", c.Args)
		}
		env := podEnv(t, c, "")
		cfg := loadRoleConfig(t, c.Args, cfgFile, env)
		if cfg.NATS.User != "admin" || cfg.NATS.Password == "" {
			t.Errorf("NATS login %q (password set %v), want the admin user", cfg.NATS.User, cfg.NATS.Password != "")
		}
		if !cfg.NATS.Accounts {
			t.Error("nats.accounts is off: provision would create every stream in the admin's account")
		}
		if cfg.Replicas != 3 {
			t.Errorf("replicas %d, want 3 on the NATS cluster", cfg.Replicas)
		}
		if !strings.Contains(cfg.NATS.URL, "nats:4222") {
			t.Errorf("nats url %q, want the Helm release's Service", cfg.NATS.URL)
		}
		mountedFiles(t, ps, c)
		// Its pods are nobody's: no Service or PDB of a role counts them.
		if svcs, pdbs := selecting(t, j.Spec.Template.Metadata.Labels); len(svcs)+len(pdbs) > 0 {
			t.Errorf("the Job's pods (labels %v) are selected by %d Services and %d PDBs", j.Spec.Template.Metadata.Labels, len(svcs), len(pdbs))
		}
	})
}

// TestHelmNATSValues checks the chart values and that the accounts merged
// into the chart's nats.conf are the very ones of deploy/nats: the same
// users in the same accounts with the same permissions and passwords.
func TestHelmNATSValues(t *testing.T) {
	var v struct {
		Config struct {
			Cluster struct {
				Enabled  bool `yaml:"enabled"`
				Replicas int  `yaml:"replicas"`
			} `yaml:"cluster"`
			JetStream struct {
				Enabled   bool `yaml:"enabled"`
				FileStore struct {
					Enabled bool `yaml:"enabled"`
					PVC     struct {
						Enabled bool   `yaml:"enabled"`
						Size    string `yaml:"size"`
					} `yaml:"pvc"`
				} `yaml:"fileStore"`
			} `yaml:"jetstream"`
		} `yaml:"config"`
	}
	decodeInto(t, yamlDocs(t, "kubernetes/nats-values.yaml")[0], &v)
	c := v.Config
	if !c.Cluster.Enabled || c.Cluster.Replicas != 3 {
		t.Errorf("cluster %+v, want enabled with 3 replicas", c.Cluster)
	}
	if !c.JetStream.Enabled || !c.JetStream.FileStore.Enabled || !c.JetStream.FileStore.PVC.Enabled || c.JetStream.FileStore.PVC.Size == "" {
		t.Errorf("jetstream %+v, want file store on a PVC", c.JetStream)
	}

	helm, merged := helmOptions(t)
	plain, err := server.ProcessConfigFile(natsConfigs(t)[0])
	if err != nil {
		t.Fatal(err)
	}
	type userView struct {
		Account, Password string
		Perms             *server.Permissions
	}
	users := func(o *server.Options) map[string]userView {
		m := map[string]userView{}
		for _, u := range o.Users {
			m[u.Username] = userView{u.Account.Name, u.Password, u.Permissions}
		}
		return m
	}
	if got, want := users(helm), users(plain); !reflect.DeepEqual(got, want) {
		t.Errorf("nats-values.yaml users differ from deploy/nats/accounts.inc:\n helm %+v\n conf %+v", got, want)
	}
	if helm.SystemAccount != plain.SystemAccount {
		t.Errorf("system account %q vs %q", helm.SystemAccount, plain.SystemAccount)
	}
	// And the whole trees (exports, imports, every permission) match.
	helmTree, err := conf.Parse(string(merged))
	if err != nil {
		t.Fatal(err)
	}
	plainTree, err := conf.ParseFile(natsConfigs(t)[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"accounts", "system_account"} {
		if !reflect.DeepEqual(helmTree[k], plainTree[k]) {
			t.Errorf("%s differs between nats-values.yaml and deploy/nats:\n helm %v\n conf %v", k, helmTree[k], plainTree[k])
		}
	}
}
