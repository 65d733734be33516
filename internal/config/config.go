// Package config binds settings from, in rising precedence: defaults, a
// YAML file, ARCA_* environment variables, and command-line flags. Every
// flag is a setting: its YAML key is the flag name (`data-dir: /var/lib/arca`)
// and its variable is ARCA_ plus the name upper-cased with dashes as
// underscores (ARCA_DATA_DIR).
package config

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"
)

// EnvName is the environment variable for flag name.
func EnvName(name string) string {
	return "ARCA_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// Apply fills every flag of fs the user did not set from the environment,
// then from the YAML file at path (if path is not empty).
func Apply(fs *pflag.FlagSet, path string) error {
	var file map[string]any
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("config file: %w", err)
		}
		if err := yaml.Unmarshal(b, &file); err != nil {
			return fmt.Errorf("config file %s: %w", path, err)
		}
		for k := range file {
			if fs.Lookup(k) == nil {
				return fmt.Errorf("config file %s: unknown setting %q", path, k)
			}
		}
	}
	var errs []string
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Changed || f.Name == "config" || f.Name == "help" {
			return
		}
		if v, ok := os.LookupEnv(EnvName(f.Name)); ok {
			if err := setAll(f, splitEnv(f, v)); err != nil {
				errs = append(errs, fmt.Sprintf("%s: %v", EnvName(f.Name), err))
			}
			return
		}
		if v, ok := file[f.Name]; ok {
			if err := setAll(f, yamlValues(v)); err != nil {
				errs = append(errs, fmt.Sprintf("%s (config file): %v", f.Name, err))
			}
		}
	})
	if len(errs) > 0 {
		return fmt.Errorf("invalid setting: %s", strings.Join(errs, "; "))
	}
	return nil
}

func isList(f *pflag.Flag) bool {
	return strings.HasSuffix(f.Value.Type(), "Slice") || strings.HasSuffix(f.Value.Type(), "Array")
}

func splitEnv(f *pflag.Flag, v string) []string {
	if isList(f) {
		return strings.Split(v, ",")
	}
	return []string{v}
}

func yamlValues(v any) []string {
	if list, ok := v.([]any); ok {
		out := make([]string, 0, len(list))
		for _, e := range list {
			out = append(out, fmt.Sprint(e))
		}
		return out
	}
	return []string{fmt.Sprint(v)}
}

func setAll(f *pflag.Flag, vals []string) error {
	for _, v := range vals {
		if err := f.Value.Set(strings.TrimSpace(v)); err != nil {
			return err
		}
	}
	return nil
}
