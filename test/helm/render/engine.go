package main

// The template engine: helm 3's pkg/engine (one template set for every file, include, tpl, required, the
// toYaml family, lookup returning nothing), with the data helm gives templates (.Values, .Release, .Chart,
// .Capabilities, .Files, .Template).

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"path"
	"regexp"
	"sort"
	"strings"
	"text/template"

	"github.com/Masterminds/sprig/v3"
	"github.com/ghodss/yaml"
	yaml3 "gopkg.in/yaml.v3"
)

// Values is chartutil.Values, the type of .Values.
type Values map[string]interface{}

// AsMap is chartutil.Values.AsMap.
func (v Values) AsMap() map[string]interface{} {
	if len(v) == 0 {
		return map[string]interface{}{}
	}
	return v
}

// YAML is chartutil.Values.YAML.
func (v Values) YAML() (string, error) {
	b, err := yaml.Marshal(v)
	return string(b), err
}

// KubeVersion is chartutil.KubeVersion.
type KubeVersion struct {
	Version string
	Major   string
	Minor   string
}

func (kv KubeVersion) String() string { return kv.Version }

// GitVersion is the deprecated alias of Version that helm keeps.
func (kv KubeVersion) GitVersion() string { return kv.Version }

// VersionSet is chartutil.VersionSet: .Capabilities.APIVersions.
type VersionSet []string

// Has is chartutil.VersionSet.Has.
func (v VersionSet) Has(apiVersion string) bool {
	for _, x := range v {
		if x == apiVersion {
			return true
		}
	}
	return false
}

// HelmVersion is the part of helm's version.BuildInfo that templates read.
type HelmVersion struct {
	Version      string `json:"version,omitempty"`
	GitCommit    string `json:"git_commit,omitempty"`
	GitTreeState string `json:"git_tree_state,omitempty"`
	GoVersion    string `json:"go_version,omitempty"`
}

// Capabilities is chartutil.Capabilities.
type Capabilities struct {
	KubeVersion KubeVersion
	APIVersions VersionSet
	HelmVersion HelmVersion
}

// defaultAPIVersions: the built-in group versions (and group/version/kind) of a current Kubernetes, which is
// what `helm template` offers without a cluster. No CRD is there: pass -api-versions for those.
var defaultAPIVersions = func() VersionSet {
	kinds := map[string][]string{
		"v1": {"ConfigMap", "Endpoints", "Event", "LimitRange", "Namespace", "Node", "PersistentVolume",
			"PersistentVolumeClaim", "Pod", "PodTemplate", "ReplicationController", "ResourceQuota", "Secret",
			"Service", "ServiceAccount"},
		"apps/v1":                         {"ControllerRevision", "DaemonSet", "Deployment", "ReplicaSet", "StatefulSet"},
		"batch/v1":                        {"CronJob", "Job"},
		"autoscaling/v1":                  {"HorizontalPodAutoscaler"},
		"autoscaling/v2":                  {"HorizontalPodAutoscaler"},
		"policy/v1":                       {"PodDisruptionBudget"},
		"networking.k8s.io/v1":            {"Ingress", "IngressClass", "NetworkPolicy"},
		"rbac.authorization.k8s.io/v1":    {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"},
		"scheduling.k8s.io/v1":            {"PriorityClass"},
		"storage.k8s.io/v1":               {"CSIDriver", "CSINode", "StorageClass", "VolumeAttachment"},
		"coordination.k8s.io/v1":          {"Lease"},
		"discovery.k8s.io/v1":             {"EndpointSlice"},
		"events.k8s.io/v1":                {"Event"},
		"node.k8s.io/v1":                  {"RuntimeClass"},
		"certificates.k8s.io/v1":          {"CertificateSigningRequest"},
		"admissionregistration.k8s.io/v1": {"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"},
		"apiextensions.k8s.io/v1":         {"CustomResourceDefinition"},
		"apiregistration.k8s.io/v1":       {"APIService"},
		"authentication.k8s.io/v1":        {"TokenReview"},
		"authorization.k8s.io/v1":         {"SubjectAccessReview"},
		"flowcontrol.apiserver.k8s.io/v1": {"FlowSchema", "PriorityLevelConfiguration"},
	}
	var out VersionSet
	for gv, ks := range kinds {
		out = append(out, gv)
		for _, k := range ks {
			out = append(out, gv+"/"+k)
		}
	}
	sort.Strings(out)
	return out
}()

// files is helm's engine files type: .Files.
type files map[string][]byte

func (f files) GetBytes(name string) []byte {
	if v, ok := f[name]; ok {
		return v
	}
	return []byte{}
}

func (f files) Get(name string) string { return string(f.GetBytes(name)) }

// Glob matches like gobwas/glob with '/' as the separator: * and ? stay within a path segment, ** crosses
// them, [...] and {a,b} work.
func (f files) Glob(pattern string) files {
	re, err := globRegexp(pattern)
	if err != nil {
		return files{}
	}
	nf := files{}
	for name, contents := range f {
		if re.MatchString(name) {
			nf[name] = contents
		}
	}
	return nf
}

func (f files) AsConfig() string {
	if len(f) == 0 {
		return ""
	}
	m := make(map[string]string)
	for k, v := range f {
		m[path.Base(k)] = string(v)
	}
	return toYAML(m)
}

func (f files) AsSecrets() string {
	if len(f) == 0 {
		return ""
	}
	m := make(map[string]string)
	for k, v := range f {
		m[path.Base(k)] = base64.StdEncoding.EncodeToString(v)
	}
	return toYAML(m)
}

func (f files) Lines(p string) []string {
	if f == nil || f[p] == nil {
		return []string{}
	}
	s := string(f[p])
	if len(s) > 0 && s[len(s)-1] == '\n' {
		s = s[:len(s)-1]
	}
	return strings.Split(s, "\n")
}

func globRegexp(pattern string) (*regexp.Regexp, error) {
	var b strings.Builder
	b.WriteString("^")
	inBraces := false
	for i := 0; i < len(pattern); i++ {
		c := pattern[i]
		switch {
		case c == '*' && i+1 < len(pattern) && pattern[i+1] == '*':
			b.WriteString(".*")
			i++
		case c == '*':
			b.WriteString("[^/]*")
		case c == '?':
			b.WriteString("[^/]")
		case c == '[':
			j := strings.IndexByte(pattern[i:], ']')
			if j < 0 {
				return nil, fmt.Errorf("unclosed [ in %q", pattern)
			}
			class := pattern[i+1 : i+j]
			if strings.HasPrefix(class, "!") {
				class = "^" + class[1:]
			}
			b.WriteString("[" + class + "]")
			i += j
		case c == '{':
			inBraces = true
			b.WriteString("(?:")
		case c == '}' && inBraces:
			inBraces = false
			b.WriteString(")")
		case c == ',' && inBraces:
			b.WriteString("|")
		case c == '\\' && i+1 < len(pattern):
			i++
			b.WriteString(regexp.QuoteMeta(string(pattern[i])))
		default:
			b.WriteString(regexp.QuoteMeta(string(c)))
		}
	}
	b.WriteString("$")
	return regexp.Compile(b.String())
}

// The toYaml family, exactly as helm's engine/funcs.go (sigs.k8s.io/yaml, whose algorithm ghodss/yaml is).

func toYAML(v interface{}) string {
	data, err := yaml.Marshal(v)
	if err != nil {
		// Swallow errors inside of a template.
		return ""
	}
	return strings.TrimSuffix(string(data), "\n")
}

func mustToYAML(v interface{}) (string, error) {
	data, err := yaml.Marshal(v)
	if err != nil {
		return "", err
	}
	return strings.TrimSuffix(string(data), "\n"), nil
}

func toYAMLPretty(v interface{}) string {
	var data bytes.Buffer
	encoder := yaml3.NewEncoder(&data)
	encoder.SetIndent(2)
	if err := encoder.Encode(v); err != nil {
		return ""
	}
	return strings.TrimSuffix(data.String(), "\n")
}

func fromYAML(str string) map[string]interface{} {
	m := map[string]interface{}{}
	if err := yaml.Unmarshal([]byte(str), &m); err != nil {
		m["Error"] = err.Error()
	}
	return m
}

func fromYAMLArray(str string) []interface{} {
	a := []interface{}{}
	if err := yaml.Unmarshal([]byte(str), &a); err != nil {
		a = []interface{}{err.Error()}
	}
	return a
}

func toJSON(v interface{}) string {
	data, err := json.Marshal(v)
	if err != nil {
		return ""
	}
	return string(data)
}

func mustToJSON(v interface{}) (string, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	return string(data), nil
}

func fromJSON(str string) map[string]interface{} {
	m := make(map[string]interface{})
	if err := json.Unmarshal([]byte(str), &m); err != nil {
		m["Error"] = err.Error()
	}
	return m
}

func fromJSONArray(str string) []interface{} {
	a := []interface{}{}
	if err := json.Unmarshal([]byte(str), &a); err != nil {
		a = []interface{}{err.Error()}
	}
	return a
}

// helm wraps the messages of required and fail so that the error printed is the message alone.
const (
	warnStartDelim = "HELM_ERR_START"
	warnEndDelim   = "HELM_ERR_END"
	recursionMax   = 1000
)

var warnRegex = regexp.MustCompile(warnStartDelim + `((?s).*)` + warnEndDelim)

func warnWrap(warn string) string { return warnStartDelim + warn + warnEndDelim }

func baseFuncMap() template.FuncMap {
	f := sprig.TxtFuncMap()
	delete(f, "env")
	delete(f, "expandenv")
	unsupported := func(name string) func(interface{}) (string, error) {
		return func(interface{}) (string, error) {
			return "", fmt.Errorf("%s is not supported by this renderer (no TOML library)", name)
		}
	}
	extra := template.FuncMap{
		"toToml":        unsupported("toToml"),
		"fromToml":      unsupported("fromToml"),
		"toYaml":        toYAML,
		"mustToYaml":    mustToYAML,
		"toYamlPretty":  toYAMLPretty,
		"fromYaml":      fromYAML,
		"fromYamlArray": fromYAMLArray,
		"toJson":        toJSON,
		"mustToJson":    mustToJSON,
		"fromJson":      fromJSON,
		"fromJsonArray": fromJSONArray,
		// Late-bound below, as in helm.
		"include":  func(string, interface{}) string { return "not implemented" },
		"tpl":      func(string, interface{}) interface{} { return "not implemented" },
		"required": func(string, interface{}) (interface{}, error) { return "not implemented", nil },
		// `helm template` has no cluster: lookup finds nothing.
		"lookup": func(string, string, string, string) (map[string]interface{}, error) {
			return map[string]interface{}{}, nil
		},
	}
	for k, v := range extra {
		f[k] = v
	}
	return f
}

type engine struct{}

func (e engine) initFuncMap(t *template.Template, includedNames map[string]int) {
	funcMap := baseFuncMap()
	funcMap["include"] = e.includeFun(t, includedNames)
	funcMap["tpl"] = e.tplFun(t, includedNames)
	funcMap["required"] = func(warn string, val interface{}) (interface{}, error) {
		if val == nil {
			return val, fmt.Errorf("%s", warnWrap(warn))
		} else if s, ok := val.(string); ok && s == "" {
			return val, fmt.Errorf("%s", warnWrap(warn))
		}
		return val, nil
	}
	funcMap["fail"] = func(msg string) (string, error) {
		return "", fmt.Errorf("%s", warnWrap(msg))
	}
	t.Funcs(funcMap)
}

func (e engine) includeFun(t *template.Template, includedNames map[string]int) func(string, interface{}) (string, error) {
	return func(name string, data interface{}) (string, error) {
		var buf strings.Builder
		if v, ok := includedNames[name]; ok {
			if v > recursionMax {
				return "", fmt.Errorf("rendering template has a nested reference name: %s: unable to execute template", name)
			}
			includedNames[name]++
		} else {
			includedNames[name] = 1
		}
		err := t.ExecuteTemplate(&buf, name, data)
		includedNames[name]--
		return buf.String(), err
	}
}

func (e engine) tplFun(parent *template.Template, includedNames map[string]int) func(string, interface{}) (string, error) {
	return func(tpl string, vals interface{}) (string, error) {
		t, err := parent.Clone()
		if err != nil {
			return "", fmt.Errorf("cannot clone template: %v", err)
		}
		t.Option("missingkey=zero")
		t.Funcs(template.FuncMap{
			"include": e.includeFun(t, includedNames),
			"tpl":     e.tplFun(t, includedNames),
		})
		t, err = t.New(parent.Name()).Parse(tpl)
		if err != nil {
			return "", fmt.Errorf("cannot parse template %q: %v", tpl, err)
		}
		var buf strings.Builder
		if err := t.Execute(&buf, vals); err != nil {
			return "", fmt.Errorf("error during tpl function execution for %q: %v", tpl, err)
		}
		return strings.ReplaceAll(buf.String(), "<no value>", ""), nil
	}
}

// sortTemplates is helm's parse order: deeper paths first, then reverse lexical order.
func sortTemplates(names []string) []string {
	out := append([]string(nil), names...)
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		ca, cb := strings.Count(a, "/"), strings.Count(b, "/")
		if ca == cb {
			return strings.Compare(a, b) == 1
		}
		return ca > cb
	})
	return out
}

// render executes every template of the chart and returns the output per template name
// ("<chart>/templates/x.yaml"), partials (_*) left out, as helm's Engine.Render.
func (e engine) render(c *Chart, top map[string]interface{}) (rendered map[string]string, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("rendering template failed: %v", r)
		}
	}()
	t := template.New("gotpl")
	t.Option("missingkey=zero")
	includedNames := make(map[string]int)
	e.initFuncMap(t, includedNames)

	names := make([]string, 0, len(c.Templates))
	for rel := range c.Templates {
		names = append(names, path.Join(c.Metadata.Name, rel))
	}
	keys := sortTemplates(names)
	for _, filename := range keys {
		rel := strings.TrimPrefix(filename, c.Metadata.Name+"/")
		if _, err := t.New(filename).Parse(string(c.Templates[rel])); err != nil {
			return nil, cleanupParseError(filename, err)
		}
	}
	rendered = make(map[string]string, len(keys))
	for _, filename := range keys {
		if strings.HasPrefix(path.Base(filename), "_") {
			continue
		}
		top["Template"] = map[string]interface{}{"Name": filename, "BasePath": path.Join(c.Metadata.Name, "templates")}
		var buf strings.Builder
		if err := t.ExecuteTemplate(&buf, filename, top); err != nil {
			return nil, cleanupExecError(filename, err)
		}
		rendered[filename] = strings.ReplaceAll(buf.String(), "<no value>", "")
	}
	return rendered, nil
}

func cleanupParseError(filename string, err error) error {
	tokens := strings.Split(err.Error(), ": ")
	if len(tokens) == 1 {
		return fmt.Errorf("parse error in (%s): %s", filename, err)
	}
	location := tokens[1]
	errMsg := tokens[len(tokens)-1]
	return fmt.Errorf("parse error at (%s): %s", location, errMsg)
}

func cleanupExecError(filename string, err error) error {
	if _, isExecError := err.(template.ExecError); !isExecError {
		return err
	}
	tokens := strings.SplitN(err.Error(), ": ", 3)
	if len(tokens) != 3 {
		return fmt.Errorf("execution error in (%s): %s", filename, err)
	}
	location := tokens[1]
	parts := warnRegex.FindStringSubmatch(tokens[2])
	if len(parts) >= 2 {
		return fmt.Errorf("execution error at (%s): %s", location, parts[1])
	}
	return err
}
