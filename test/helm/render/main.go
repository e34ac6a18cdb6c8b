// Command render renders a Helm 3 chart directory the way `helm template` does, for CI machines without
// helm: Go's text/template with sprig and helm's own functions, values merged like helm's, the output split
// into documents with `# Source:` comments, hooks after the rest. Any template error exits 1.
//
// It is not helm: no chart dependencies, no --set, no schema validation (the Jest test does that with
// ajv), no lint, and `lookup` finds nothing. Built from Debian's Go packages in GOPATH mode; the Jest test
// test/helm/chart.test.ts builds and caches it. By hand:
//
//	mkdir -p /tmp/gp/src/render && cp test/helm/render/*.go /tmp/gp/src/render/ &&
//	printf 'module render\n' > /tmp/gp/src/render/go.mod &&
//	(cd /tmp/gp/src/render && GO111MODULE=off GOPATH=/tmp/gp:/usr/share/gocode go build -o /tmp/render .) &&
//	/tmp/render -chart helm/custos -f my-values.yaml
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/Masterminds/semver/v3"
	"github.com/ghodss/yaml"
)

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// installOrder is helm's releaseutil.InstallOrder.
var installOrder = []string{
	"PriorityClass", "Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange", "PodSecurityPolicy",
	"PodDisruptionBudget", "ServiceAccount", "Secret", "SecretList", "ConfigMap", "StorageClass",
	"PersistentVolume", "PersistentVolumeClaim", "CustomResourceDefinition", "ClusterRole", "ClusterRoleList",
	"ClusterRoleBinding", "ClusterRoleBindingList", "Role", "RoleList", "RoleBinding", "RoleBindingList",
	"Service", "DaemonSet", "Pod", "ReplicationController", "ReplicaSet", "Deployment",
	"HorizontalPodAutoscaler", "StatefulSet", "Job", "CronJob", "IngressClass", "Ingress", "APIService",
}

var hookEvents = map[string]bool{
	"pre-install": true, "post-install": true, "pre-delete": true, "post-delete": true, "pre-upgrade": true,
	"post-upgrade": true, "pre-rollback": true, "post-rollback": true, "test": true, "test-success": true,
}

// releaseNameRE is helm's release name rule (DNS-1123 label, at most 53 characters).
var releaseNameRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)

// splitSep is releaseutil.SplitManifests' separator.
var splitSep = regexp.MustCompile("(?:^|\\s*\n)---\\s*")

type manifest struct {
	Source  string
	Content string
	Kind    string
	Name    string
	Hook    []string
	Weight  int
	order   int
}

type head struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind,omitempty"`
	Metadata   *struct {
		Name        string            `json:"name"`
		Annotations map[string]string `json:"annotations"`
	} `json:"metadata,omitempty"`
}

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "Error: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("render", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var valueFiles, apiVersions multiFlag
	chartDir := fs.String("chart", "", "chart directory")
	fs.Var(&valueFiles, "f", "values file (repeatable; later files win)")
	name := fs.String("name", "custos", "release name")
	namespace := fs.String("namespace", "default", "release namespace")
	kubeVersion := fs.String("kube-version", "v1.31.0", "Kubernetes version for .Capabilities")
	fs.Var(&apiVersions, "api-versions", "extra API version for .Capabilities.APIVersions (repeatable)")
	upgrade := fs.Bool("is-upgrade", false, "render as an upgrade (.Release.IsUpgrade)")
	output := fs.String("o", "yaml", "yaml: a stream like `helm template`; json: one line per object, "+
		"converted from YAML as helm's Kubernetes client does (sigs.k8s.io/yaml)")
	notes := fs.Bool("notes", false, "print the rendered NOTES.txt instead of the manifests")
	dumpValues := fs.Bool("dump-values", false, "print the merged values as JSON and stop")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *chartDir == "" {
		return fmt.Errorf("-chart is required")
	}
	if len(*name) > 53 || !releaseNameRE.MatchString(*name) {
		return fmt.Errorf("release name %q is invalid", *name)
	}
	c, err := loadChart(*chartDir)
	if err != nil {
		return err
	}
	user := map[string]interface{}{}
	for _, f := range valueFiles {
		data, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		v, err := readValues(data)
		if err != nil {
			return fmt.Errorf("failed to parse %s: %v", f, err)
		}
		user = mergeMaps(user, v)
	}
	values := coalesceValues(c.Values, user, func(msg string) { fmt.Fprintln(stderr, msg) })
	if *dumpValues {
		b, err := json.Marshal(values)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, string(b))
		return nil
	}

	kv, err := semver.NewVersion(*kubeVersion)
	if err != nil {
		return fmt.Errorf("invalid -kube-version %q: %v", *kubeVersion, err)
	}
	if err := checkKubeVersion(&c.Metadata, *kubeVersion); err != nil {
		return err
	}
	caps := &Capabilities{
		KubeVersion: KubeVersion{
			Version: "v" + kv.String(),
			Major:   strconv.FormatUint(kv.Major(), 10),
			Minor:   strconv.FormatUint(kv.Minor(), 10),
		},
		APIVersions: append(append(VersionSet{}, defaultAPIVersions...), apiVersions...),
		HelmVersion: HelmVersion{Version: "v3.16.0", GoVersion: "go1.19"},
	}
	top := map[string]interface{}{
		"Values": Values(values),
		"Release": map[string]interface{}{
			"Name":      *name,
			"Namespace": *namespace,
			"IsUpgrade": *upgrade,
			"IsInstall": !*upgrade,
			"Revision":  1,
			"Service":   "Helm",
		},
		"Chart":        &c.Metadata,
		"Capabilities": caps,
		"Files":        files(c.Files),
		"Subcharts":    map[string]interface{}{},
	}
	if *upgrade {
		top["Release"].(map[string]interface{})["Revision"] = 2
	}

	rendered, err := engine{}.render(c, top)
	if err != nil {
		return err
	}
	notesKey := path.Join(c.Metadata.Name, "templates", "NOTES.txt")
	notesText := rendered[notesKey]
	for k := range rendered {
		if strings.HasSuffix(k, "NOTES.txt") {
			delete(rendered, k)
		}
	}
	if *notes {
		fmt.Fprint(stdout, notesText)
		return nil
	}

	manifests, hooks, err := sortManifests(rendered, stderr)
	if err != nil {
		return err
	}
	switch *output {
	case "yaml":
		for _, m := range append(manifests, hooks...) {
			fmt.Fprintf(stdout, "---\n# Source: %s\n%s\n", m.Source, m.Content)
		}
	case "json":
		enc := json.NewEncoder(stdout)
		for _, m := range append(manifests, hooks...) {
			j, err := yaml.YAMLToJSON([]byte(m.Content))
			if err != nil {
				return fmt.Errorf("YAML parse error on %s: %v", m.Source, err)
			}
			var hook interface{}
			if m.Hook != nil {
				hook = m.Hook
			}
			if err := enc.Encode(map[string]interface{}{"source": m.Source, "hook": hook, "object": json.RawMessage(j)}); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("-o must be yaml or json")
	}
	return nil
}

// sortManifests is releaseutil.SortManifests: each file split into documents, each document's head parsed
// (a YAML error fails the render, as in helm), hooks set apart, the rest in install order.
func sortManifests(rendered map[string]string, stderr io.Writer) ([]manifest, []manifest, error) {
	paths := make([]string, 0, len(rendered))
	for p := range rendered {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	var manifests, hooks []manifest
	order := 0
	for _, p := range paths {
		content := rendered[p]
		if strings.TrimSpace(content) == "" {
			continue
		}
		for _, doc := range splitSep.Split(strings.TrimSpace(content), -1) {
			if doc == "" {
				continue
			}
			doc = strings.TrimSpace(doc)
			var h head
			if err := yaml.Unmarshal([]byte(doc), &h); err != nil {
				return nil, nil, fmt.Errorf("YAML parse error on %s: %v", p, err)
			}
			m := manifest{Source: p, Content: doc, Kind: h.Kind, order: order}
			order++
			if h.Metadata != nil {
				m.Name = h.Metadata.Name
				if hk, ok := h.Metadata.Annotations["helm.sh/hook"]; ok && hk != "" {
					m.Hook = []string{}
					for _, ev := range strings.Split(hk, ",") {
						ev = strings.ToLower(strings.TrimSpace(ev))
						if !hookEvents[ev] {
							// helm ignores an unknown event silently; say so.
							fmt.Fprintf(stderr, "warning: %s: unknown hook event %q is ignored by helm\n", p, ev)
							continue
						}
						m.Hook = append(m.Hook, ev)
					}
					if w, err := strconv.Atoi(h.Metadata.Annotations["helm.sh/hook-weight"]); err == nil {
						m.Weight = w
					}
				}
			}
			if m.Hook != nil {
				hooks = append(hooks, m)
			} else {
				manifests = append(manifests, m)
			}
		}
	}
	rank := func(kind string) int {
		for i, k := range installOrder {
			if k == kind {
				return i
			}
		}
		return len(installOrder)
	}
	byKind := func(ms []manifest) func(i, j int) bool {
		return func(i, j int) bool {
			a, b := ms[i], ms[j]
			ra, rb := rank(a.Kind), rank(b.Kind)
			if ra != rb {
				return ra < rb
			}
			if ra == len(installOrder) && a.Kind != b.Kind {
				return a.Kind < b.Kind
			}
			return a.order < b.order
		}
	}
	sort.SliceStable(manifests, byKind(manifests))
	sort.SliceStable(hooks, byKind(hooks))
	sort.SliceStable(hooks, func(i, j int) bool { return hooks[i].Weight < hooks[j].Weight })
	return manifests, hooks, nil
}
