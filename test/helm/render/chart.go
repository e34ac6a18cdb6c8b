package main

// Loading a chart directory and its values the way helm 3 does (pkg/chart/loader, pkg/chartutil).

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/Masterminds/semver/v3"
	"github.com/ghodss/yaml"
)

// Metadata is helm's chart.Metadata: what templates see as .Chart (field names are helm's).
type Metadata struct {
	Name         string            `json:"name,omitempty"`
	Home         string            `json:"home,omitempty"`
	Sources      []string          `json:"sources,omitempty"`
	Version      string            `json:"version,omitempty"`
	Description  string            `json:"description,omitempty"`
	Keywords     []string          `json:"keywords,omitempty"`
	Maintainers  []*Maintainer     `json:"maintainers,omitempty"`
	Icon         string            `json:"icon,omitempty"`
	APIVersion   string            `json:"apiVersion,omitempty"`
	Condition    string            `json:"condition,omitempty"`
	Tags         string            `json:"tags,omitempty"`
	AppVersion   string            `json:"appVersion,omitempty"`
	Deprecated   bool              `json:"deprecated,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	KubeVersion  string            `json:"kubeVersion,omitempty"`
	Dependencies []interface{}     `json:"dependencies,omitempty"`
	Type         string            `json:"type,omitempty"`
}

// Maintainer is helm's chart.Maintainer.
type Maintainer struct {
	Name  string `json:"name,omitempty"`
	Email string `json:"email,omitempty"`
	URL   string `json:"url,omitempty"`
}

// Chart is what the loader keeps of a chart directory.
type Chart struct {
	Metadata  Metadata
	Values    map[string]interface{}
	Schema    []byte
	Templates map[string][]byte // "templates/x.yaml" -> content
	Files     map[string][]byte // every other file, for .Files
}

var chartNameRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// loadChart reads a chart directory like helm's DirLoader: .helmignore applies, Chart.yaml, values.yaml and
// values.schema.json are special, templates/ are templates, everything else is a file for .Files.
func loadChart(dir string) (*Chart, error) {
	ignore, err := readHelmignore(filepath.Join(dir, ".helmignore"))
	if err != nil {
		return nil, err
	}
	c := &Chart{Templates: map[string][]byte{}, Files: map[string][]byte{}, Values: map[string]interface{}{}}
	var sawChartYaml bool
	err = filepath.Walk(dir, func(p string, info os.FileInfo, walkErr error) error {
		if walkErr != nil {
			return walkErr
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if rel == "." {
			return nil
		}
		if ignore.ignored(rel, info.IsDir()) {
			if info.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if info.IsDir() {
			if rel == "charts" {
				return fmt.Errorf("chart dependencies (charts/) are not supported by this renderer")
			}
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		switch {
		case rel == "Chart.yaml":
			sawChartYaml = true
			if err := yaml.Unmarshal(data, &c.Metadata); err != nil {
				return fmt.Errorf("cannot load Chart.yaml: %v", err)
			}
		case rel == "values.yaml":
			v, err := readValues(data)
			if err != nil {
				return fmt.Errorf("cannot load values.yaml: %v", err)
			}
			c.Values = v
		case rel == "values.schema.json":
			c.Schema = data
		case rel == "requirements.yaml" || rel == "Chart.lock" || rel == "requirements.lock":
			return fmt.Errorf("%s: chart dependencies are not supported by this renderer", rel)
		case strings.HasPrefix(rel, "templates/"):
			c.Templates[rel] = data
		default:
			c.Files[rel] = data
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if !sawChartYaml {
		return nil, fmt.Errorf("Chart.yaml file is missing")
	}
	return c, validateMetadata(&c.Metadata)
}

// validateMetadata is the part of helm's Metadata.Validate that a chart directory can get wrong.
func validateMetadata(m *Metadata) error {
	if m.APIVersion == "" {
		return fmt.Errorf("validation: chart.metadata.apiVersion is required")
	}
	if m.APIVersion != "v1" && m.APIVersion != "v2" {
		return fmt.Errorf("validation: chart.metadata.apiVersion %q is not v1 or v2", m.APIVersion)
	}
	if m.Name == "" {
		return fmt.Errorf("validation: chart.metadata.name is required")
	}
	if !chartNameRE.MatchString(m.Name) {
		return fmt.Errorf("validation: chart.metadata.name %q is invalid", m.Name)
	}
	if m.Version == "" {
		return fmt.Errorf("validation: chart.metadata.version is required")
	}
	if _, err := semver.StrictNewVersion(m.Version); err != nil {
		return fmt.Errorf("validation: chart.metadata.version %q is invalid", m.Version)
	}
	if m.Type != "" && m.Type != "application" && m.Type != "library" {
		return fmt.Errorf("validation: chart.metadata.type must be application or library")
	}
	if m.Type == "library" {
		return fmt.Errorf("library charts cannot be rendered")
	}
	return nil
}

// checkKubeVersion applies Chart.yaml's kubeVersion constraint, as helm install does.
func checkKubeVersion(m *Metadata, kubeVersion string) error {
	if m.KubeVersion == "" {
		return nil
	}
	c, err := semver.NewConstraint(m.KubeVersion)
	if err != nil {
		return fmt.Errorf("Chart.yaml kubeVersion %q is not a valid constraint: %v", m.KubeVersion, err)
	}
	v, err := semver.NewVersion(kubeVersion)
	if err != nil {
		return err
	}
	if !c.Check(v) {
		return fmt.Errorf("chart requires kubeVersion: %s which is incompatible with Kubernetes %s", m.KubeVersion, kubeVersion)
	}
	return nil
}

// readValues is chartutil.ReadValues: sigs.k8s.io/yaml (YAML to JSON, then encoding/json), so every number
// becomes a float64, as in helm.
func readValues(data []byte) (map[string]interface{}, error) {
	vals := map[string]interface{}{}
	if err := yaml.Unmarshal(data, &vals); err != nil {
		return nil, err
	}
	if vals == nil {
		vals = map[string]interface{}{}
	}
	return vals, nil
}

// mergeMaps is how helm merges several -f files: later files win, tables merge, lists are replaced.
func mergeMaps(a, b map[string]interface{}) map[string]interface{} {
	out := make(map[string]interface{}, len(a))
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		if v, ok := v.(map[string]interface{}); ok {
			if bv, ok := out[k]; ok {
				if bv, ok := bv.(map[string]interface{}); ok {
					out[k] = mergeMaps(bv, v)
					continue
				}
			}
		}
		out[k] = v
	}
	return out
}

// coalesceValues is chartutil.CoalesceValues for a chart without dependencies: the user's values over the
// chart's defaults; a null from the user deletes the default.
func coalesceValues(chartValues, user map[string]interface{}, warn func(string)) map[string]interface{} {
	v := deepCopy(user).(map[string]interface{})
	defaults := deepCopy(chartValues).(map[string]interface{})
	for key, val := range defaults {
		if value, ok := v[key]; ok {
			if value == nil {
				delete(v, key)
			} else if dest, ok := value.(map[string]interface{}); ok {
				src, ok := val.(map[string]interface{})
				if !ok {
					if val != nil {
						warn(fmt.Sprintf("warning: skipped value for %s: Not a table.", key))
					}
				} else {
					coalesceTables(dest, src, key, warn)
				}
			}
		} else {
			v[key] = val
		}
	}
	return v
}

func coalesceTables(dst, src map[string]interface{}, prefix string, warn func(string)) {
	for key, val := range src {
		fullkey := prefix + "." + key
		dv, ok := dst[key]
		switch {
		case ok && dv == nil:
			delete(dst, key)
		case !ok:
			dst[key] = val
		case isTable(val):
			if isTable(dv) {
				coalesceTables(dv.(map[string]interface{}), val.(map[string]interface{}), fullkey, warn)
			} else {
				warn(fmt.Sprintf("warning: cannot overwrite table with non table for %s (%v)", fullkey, val))
			}
		case isTable(dv) && val != nil:
			warn(fmt.Sprintf("warning: destination for %s is a table. Ignoring non-table value (%v)", fullkey, val))
		}
	}
}

func isTable(v interface{}) bool {
	_, ok := v.(map[string]interface{})
	return ok
}

func deepCopy(v interface{}) interface{} {
	switch t := v.(type) {
	case map[string]interface{}:
		out := make(map[string]interface{}, len(t))
		for k, x := range t {
			out[k] = deepCopy(x)
		}
		return out
	case []interface{}:
		out := make([]interface{}, len(t))
		for i, x := range t {
			out[i] = deepCopy(x)
		}
		return out
	default:
		return v
	}
}

// helmignore is a subset of helm's .helmignore rules: shell patterns on the path or on its base name,
// a trailing "/" for directories, "!" negation. helm also ignores hidden files under templates/.
type helmignore struct{ rules []ignoreRule }

type ignoreRule struct {
	pattern string
	dirOnly bool
	negate  bool
}

func readHelmignore(file string) (*helmignore, error) {
	h := &helmignore{}
	data, err := os.ReadFile(file)
	if err != nil && !os.IsNotExist(err) {
		return nil, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		r := ignoreRule{}
		if strings.HasPrefix(line, "!") {
			r.negate = true
			line = line[1:]
		}
		if strings.HasSuffix(line, "/") {
			r.dirOnly = true
			line = strings.TrimSuffix(line, "/")
		}
		if strings.Contains(line, "**") {
			return nil, fmt.Errorf(".helmignore: %q: ** is not supported by this renderer", line)
		}
		if _, err := path.Match(line, ""); err != nil {
			return nil, fmt.Errorf(".helmignore: bad pattern %q", line)
		}
		r.pattern = strings.TrimPrefix(line, "/")
		h.rules = append(h.rules, r)
	}
	// helm's AddDefaults: hidden files in templates/.
	h.rules = append(h.rules, ignoreRule{pattern: "templates/.?*"})
	return h, nil
}

func (h *helmignore) ignored(rel string, isDir bool) bool {
	if rel == ".helmignore" {
		return false
	}
	out := false
	for _, r := range h.rules {
		if r.dirOnly && !isDir {
			continue
		}
		matched := false
		if strings.Contains(r.pattern, "/") {
			matched, _ = path.Match(r.pattern, rel)
		} else {
			matched, _ = path.Match(r.pattern, path.Base(rel))
		}
		if matched {
			out = !r.negate
		}
	}
	return out
}

// sortedKeys returns a map's keys in order.
func sortedKeys(m map[string][]byte) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
