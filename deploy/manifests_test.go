package deploy_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/conf"
	"github.com/nats-io/nats-server/v2/server"
	"go.yaml.in/yaml/v3"

	"github.com/wxhub/wxhub/internal/config"
)

// documentedFlags are the flags of `wxhub holder` and `wxhub worker` that
// deployment files may use.
var documentedFlags = []string{
	"config", "nats-url", "nats-creds", "nats-nkey", "nats-user", "nats-password",
	"nats-token", "nats-tls-ca", "nats-tls-cert", "nats-tls-key", "prefix", "replicas",
	"wechat-base-url", "http-listen", "log-format", "log-level", "app",
	"holder-id", "lease-ttl", "refresh-margin", "quota-reserve",
	"concurrency", "max-deliver", "ack-wait",
}

// roleFlags are the flag groups of each long-running subcommand, as in
// cmd/wxhub.
var roleFlags = map[string]config.Roles{
	"holder": config.FlagsNATS | config.FlagsServer | config.FlagsHolder,
	"worker": config.FlagsNATS | config.FlagsServer | config.FlagsWorker,
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
// --config names replaced by configFile and env as the environment.
func loadRoleConfig(t *testing.T, args []string, configFile string, env map[string]string) *config.Config {
	t.Helper()
	if len(args) == 0 {
		t.Fatal("no subcommand")
	}
	roles, ok := roleFlags[args[0]]
	if !ok {
		t.Fatalf("subcommand %q, want holder or worker", args[0])
	}
	rest := slices.Clone(args[1:])
	for i, a := range rest {
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if strings.HasPrefix(a, "-") && !slices.Contains(documentedFlags, name) {
			t.Errorf("%s: flag --%s is not a documented wxhub flag", args[0], name)
		}
		if a == "--config" && i+1 < len(rest) {
			rest[i+1] = configFile
		}
	}
	fs := flag.NewFlagSet("wxhub "+args[0], flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfg, err := config.Load(fs, roles, rest, func(k string) string { return env[k] })
	if err != nil {
		t.Fatalf("wxhub %s: %v", strings.Join(args, " "), err)
	}
	if fs.NArg() > 0 {
		t.Fatalf("wxhub %s: stray argument %q", args[0], fs.Arg(0))
	}
	if err := cfg.Validate(false); err != nil {
		t.Fatalf("wxhub %s: invalid configuration: %v", args[0], err)
	}
	return cfg
}

// checkEnvNames fails for a WXHUB_* variable wxhub does not read.
func checkEnvNames(t *testing.T, env map[string]string) {
	t.Helper()
	for k := range env {
		if !strings.HasPrefix(k, "WXHUB_") || strings.HasPrefix(k, "WXHUB_SECRET_") {
			continue
		}
		known := false
		for _, f := range documentedFlags {
			known = known || config.EnvName(f) == k
		}
		if !known {
			t.Errorf("environment variable %s is not read by wxhub", k)
		}
	}
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
		Ports []struct {
			Port       int    `yaml:"port"`
			TargetPort string `yaml:"targetPort"`
		} `yaml:"ports"`
	} `yaml:"spec"`
	raw map[string]any
}

type podSpec struct {
	TerminationGracePeriodSeconds int `yaml:"terminationGracePeriodSeconds"`
	SecurityContext               struct {
		RunAsNonRoot bool `yaml:"runAsNonRoot"`
	} `yaml:"securityContext"`
	Affinity struct {
		PodAntiAffinity map[string]any `yaml:"podAntiAffinity"`
	} `yaml:"affinity"`
	Containers []struct {
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
		ReadinessProbe probe `yaml:"readinessProbe"`
		LivenessProbe  probe `yaml:"livenessProbe"`
		Resources      struct {
			Requests map[string]string `yaml:"requests"`
			Limits   map[string]string `yaml:"limits"`
		} `yaml:"resources"`
		SecurityContext struct {
			AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
			ReadOnlyRootFilesystem   bool  `yaml:"readOnlyRootFilesystem"`
		} `yaml:"securityContext"`
		VolumeMounts []struct {
			Name      string `yaml:"name"`
			MountPath string `yaml:"mountPath"`
			SubPath   string `yaml:"subPath"`
		} `yaml:"volumeMounts"`
	} `yaml:"containers"`
	Volumes []struct {
		Name      string `yaml:"name"`
		ConfigMap struct {
			Name string `yaml:"name"`
		} `yaml:"configMap"`
		Secret struct {
			SecretName string `yaml:"secretName"`
		} `yaml:"secret"`
	} `yaml:"volumes"`
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
	get := func(key string) *k8sObject {
		t.Helper()
		o := objs[key]
		if o == nil {
			t.Fatalf("%s missing", key)
		}
		return o
	}
	cm := get("ConfigMap/wxhub-config")
	cfgFile := filepath.Join(t.TempDir(), "wxhub.yaml")
	if err := os.WriteFile(cfgFile, []byte(cm.Data["wxhub.yaml"]), 0o600); err != nil {
		t.Fatal(err)
	}

	t.Run("holder replicas", func(t *testing.T) {
		if r := get("Deployment/wxhub-holder").Spec.Replicas; r == nil || *r != 2 {
			t.Fatalf("holder replicas %v, want 2", r)
		}
	})
	t.Run("HPA scales the worker Deployment on CPU", func(t *testing.T) {
		h := get("HorizontalPodAutoscaler/wxhub-worker")
		if h.APIVersion != "autoscaling/v2" {
			t.Errorf("apiVersion %s", h.APIVersion)
		}
		ref := h.Spec.ScaleTargetRef
		if ref.Kind != "Deployment" || objs["Deployment/"+ref.Name] == nil || ref.Name != "wxhub-worker" {
			t.Errorf("scaleTargetRef %s/%s, want Deployment/wxhub-worker", ref.Kind, ref.Name)
		}
		if h.Spec.MinReplicas != 2 || h.Spec.MaxReplicas != 20 {
			t.Errorf("min %d max %d, want 2 and 20", h.Spec.MinReplicas, h.Spec.MaxReplicas)
		}
		if len(h.Spec.Metrics) != 1 || h.Spec.Metrics[0].Resource.Name != "cpu" {
			t.Errorf("metrics %+v, want cpu", h.Spec.Metrics)
		}
	})

	for _, role := range []string{"holder", "worker"} {
		t.Run(role, func(t *testing.T) {
			d := get("Deployment/wxhub-" + role)
			pod := d.Spec.Template
			if !subset(d.Spec.Selector.MatchLabels, pod.Metadata.Labels) {
				t.Errorf("selector %v does not match pod labels %v", d.Spec.Selector.MatchLabels, pod.Metadata.Labels)
			}
			ps := pod.Spec
			if ps.TerminationGracePeriodSeconds < 30 {
				t.Errorf("terminationGracePeriodSeconds %d, want >= 30 to drain", ps.TerminationGracePeriodSeconds)
			}
			if !ps.SecurityContext.RunAsNonRoot {
				t.Error("pod not runAsNonRoot")
			}
			if len(ps.Affinity.PodAntiAffinity) == 0 {
				t.Error("no podAntiAffinity")
			}
			if pod.Metadata.Annotations["prometheus.io/scrape"] != "true" || pod.Metadata.Annotations["prometheus.io/port"] != "8090" {
				t.Errorf("prometheus annotations %v", pod.Metadata.Annotations)
			}
			if len(ps.Containers) != 1 {
				t.Fatalf("%d containers, want 1", len(ps.Containers))
			}
			c := ps.Containers[0]
			if !strings.HasPrefix(c.Image, "wxhub:") {
				t.Errorf("image %q", c.Image)
			}
			if c.ReadinessProbe.HTTPGet.Path != "/readyz" || c.LivenessProbe.HTTPGet.Path != "/healthz" {
				t.Errorf("probes %q/%q, want /readyz and /healthz", c.ReadinessProbe.HTTPGet.Path, c.LivenessProbe.HTTPGet.Path)
			}
			if c.Resources.Requests["cpu"] == "" || c.Resources.Requests["memory"] == "" || c.Resources.Limits["memory"] == "" {
				t.Errorf("resources %+v: want cpu/memory requests (the HPA needs cpu) and a memory limit", c.Resources)
			}
			if !c.SecurityContext.ReadOnlyRootFilesystem || c.SecurityContext.AllowPrivilegeEscalation == nil || *c.SecurityContext.AllowPrivilegeEscalation {
				t.Errorf("container securityContext %+v", c.SecurityContext)
			}
			if len(c.Args) == 0 || c.Args[0] != role {
				t.Fatalf("args %v, want the %s subcommand first", c.Args, role)
			}

			// The environment, with Secret references resolved.
			env := map[string]string{}
			for _, e := range c.Env {
				v := e.Value
				if ref := e.ValueFrom.SecretKeyRef; ref.Name != "" {
					s := get("Secret/" + ref.Name)
					var ok bool
					if v, ok = s.StringData[ref.Key]; !ok {
						t.Errorf("env %s: Secret %s has no key %s", e.Name, ref.Name, ref.Key)
					}
				}
				if e.ValueFrom.FieldRef.FieldPath != "" {
					v = "pod-" + role
				}
				env[e.Name] = v
			}
			checkEnvNames(t, env)
			cfg := loadRoleConfig(t, c.Args, cfgFile, env)
			if !strings.HasSuffix(cfg.HTTPListen, ":8090") || strings.HasPrefix(cfg.HTTPListen, "127.") {
				t.Errorf("http-listen %q: probes and Prometheus need :8090 on the pod IP", cfg.HTTPListen)
			}
			if cfg.Replicas != 3 {
				t.Errorf("replicas %d, want 3 on the NATS cluster", cfg.Replicas)
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

			// Mounts: the config file and every app's secret_file exist in
			// the pod, from volumes that exist in the kustomization.
			files := map[string]bool{}
			for _, m := range c.VolumeMounts {
				var vol *struct {
					Name      string `yaml:"name"`
					ConfigMap struct {
						Name string `yaml:"name"`
					} `yaml:"configMap"`
					Secret struct {
						SecretName string `yaml:"secretName"`
					} `yaml:"secret"`
				}
				for i := range ps.Volumes {
					if ps.Volumes[i].Name == m.Name {
						vol = &ps.Volumes[i]
					}
				}
				if vol == nil {
					t.Errorf("volumeMount %s: no such volume", m.Name)
					continue
				}
				switch {
				case vol.ConfigMap.Name != "":
					for k := range get("ConfigMap/" + vol.ConfigMap.Name).Data {
						if m.SubPath == k {
							files[m.MountPath] = true
						} else if m.SubPath == "" {
							files[path.Join(m.MountPath, k)] = true
						}
					}
				case vol.Secret.SecretName != "":
					for k := range get("Secret/" + vol.Secret.SecretName).StringData {
						files[path.Join(m.MountPath, k)] = true
					}
				}
			}
			want := []string{"/etc/wxhub/wxhub.yaml"}
			for _, a := range cfg.Apps {
				want = append(want, a.SecretFile)
			}
			for _, f := range want {
				if !files[f] {
					t.Errorf("%s is not mounted (mounted: %v)", f, files)
				}
			}

			// A PodDisruptionBudget and a metrics Service cover the pods.
			var pdb, svc bool
			for _, o := range objs {
				var sel map[string]string
				switch o.Kind {
				case "PodDisruptionBudget":
					sel = o.Spec.Selector.MatchLabels
				case "Service":
					sel = map[string]string{}
					decodeInto(t, o.raw["spec"].(map[string]any)["selector"].(map[string]any), &sel)
				default:
					continue
				}
				if subset(sel, pod.Metadata.Labels) {
					pdb = pdb || o.Kind == "PodDisruptionBudget"
					svc = svc || (o.Kind == "Service" && len(o.Spec.Ports) > 0 && o.Spec.Ports[0].Port == 8090 && o.Spec.Ports[0].TargetPort == "http")
				}
			}
			if !pdb || !svc {
				t.Errorf("PodDisruptionBudget %v, metrics Service on 8090 %v", pdb, svc)
			}
		})
	}
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
			Merge map[string]any `yaml:"merge"`
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

	// JSON is valid NATS configuration syntax.
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // NATS knows no \u escapes: keep ">" as is
	if err := enc.Encode(c.Merge); err != nil {
		t.Fatal(err)
	}
	merged := buf.Bytes()
	file := filepath.Join(t.TempDir(), "merged.conf")
	if err := os.WriteFile(file, merged, 0o600); err != nil {
		t.Fatal(err)
	}
	helm, err := server.ProcessConfigFile(file)
	if err != nil {
		t.Fatalf("config.merge as nats.conf: %v", err)
	}
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
