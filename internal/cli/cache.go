package cli

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// cacheRuleKeys are fields az's cache rule model always prints.
var cacheRuleKeys = []string{"credentialSetResourceId", "identity"}

func newCacheCmd(env Env) *cobra.Command {
	o := newClientOpts(env)
	cmd := &cobra.Command{
		Use: "cache",
		// One seed spells it "az acr Cache"; accept that spelling too.
		Aliases: []string{"Cache"},
		Short:   "Manage cache rules (az acr cache)",
		Long: `Manage cache rules: each maps a target repository (or namespace) of a
registry to a source repository on an upstream registry, optionally with a
credential set, a user-assigned identity, and active sync with filters.

Commands and flags follow "az acr cache" and its acrcache extension.`,
	}
	o.addFlags(cmd.PersistentFlags())
	cmd.AddCommand(newCacheCreateCmd(o), newCacheUpdateCmd(o), newCacheShowCmd(o),
		newCacheListCmd(o), newCacheDeleteCmd(o), newCacheSyncCmd(o))
	return cmd
}

// target is the -r/-g/-n triple most commands take.
type target struct {
	registry, rg, name string
}

func (t *target) addFlags(fs *pflag.FlagSet, nameHelp string) {
	fs.StringVarP(&t.registry, "registry", "r", "", "The name of the container registry (or one of its host names).")
	fs.StringVarP(&t.rg, "resource-group", "g", "", "Name of resource group. Defaults to the server's resource group.")
	if nameHelp != "" {
		fs.StringVarP(&t.name, "name", "n", "", nameHelp)
	}
}

// rulePath is the ARM path of the rule (or the collection when name is "").
func (s *session) rulePath(ctx context.Context, t target) (base, path string, err error) {
	base, err = s.registryPath(ctx, t.registry, t.rg)
	if err != nil {
		return "", "", err
	}
	path = base + "/cacheRules"
	if t.name != "" {
		path += "/" + pathEscape(t.name)
	}
	return base, path, nil
}

// printRule prints one rule as az does.
func (s *session) printRule(raw json.RawMessage) error {
	if raw == nil {
		return nil
	}
	m, err := decodeResource(raw, cacheRuleKeys...)
	if err != nil {
		return err
	}
	s.out.table = cacheRuleTable
	return s.out.print(m)
}

// cacheRuleTable picks the columns of -o table.
func cacheRuleTable(v any) (any, map[string]int) {
	cols := []string{"name", "sourceRepository", "targetRepository", "credentialSet", "syncMode", "provisioningState", "creationDate"}
	order := map[string]int{}
	for i, c := range cols {
		order[c] = i
	}
	row := func(x any) any {
		m, ok := x.(map[string]any)
		if !ok {
			return x
		}
		r := map[string]any{}
		for _, c := range cols {
			if v, ok := m[c]; ok {
				r[c] = v
			}
		}
		if id := str(m, "credentialSetResourceId"); id != "" {
			r["credentialSet"] = id[strings.LastIndex(id, "/")+1:]
		}
		return r
	}
	if list, ok := v.([]any); ok {
		out := make([]any, len(list))
		for i, x := range list {
			out[i] = row(x)
		}
		return out, order
	}
	return row(v), order
}

func newCacheShowCmd(o *clientOpts) *cobra.Command {
	var t target
	cmd := &cobra.Command{
		Use:   "show",
		Short: "Show a cache rule.",
		Example: `  arca cache show -r MyRegistry -n MyRule
  arca cache show -r MyRegistry -n MyRule --query sourceRepository -o tsv`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireFlags(cmd, "name", "registry"); err != nil {
				return err
			}
			s, err := o.connect()
			if err != nil {
				return err
			}
			ctx, cancel := o.context(cmd)
			defer cancel()
			_, path, err := s.rulePath(ctx, t)
			if err != nil {
				return err
			}
			raw, err := s.call(ctx, http.MethodGet, withAPIVersion(path), nil)
			if err != nil {
				return err
			}
			return s.printRule(raw)
		},
	}
	t.addFlags(cmd.Flags(), "The name of the cache rule.")
	return cmd
}

func newCacheListCmd(o *clientOpts) *cobra.Command {
	var t target
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the cache rules in a registry.",
		Example: `  arca cache list -r MyRegistry
  arca cache list -r MyRegistry -o table`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireFlags(cmd, "registry"); err != nil {
				return err
			}
			s, err := o.connect()
			if err != nil {
				return err
			}
			ctx, cancel := o.context(cmd)
			defer cancel()
			_, path, err := s.rulePath(ctx, t)
			if err != nil {
				return err
			}
			items, err := s.list(ctx, withAPIVersion(path))
			if err != nil {
				return err
			}
			return s.printList(items, cacheRuleTable, cacheRuleKeys...)
		},
	}
	t.addFlags(cmd.Flags(), "")
	return cmd
}

// printList prints a collection as az does (a JSON array of flattened
// resources).
func (s *session) printList(items []json.RawMessage, table func(any) (any, map[string]int), keys ...string) error {
	out := make([]any, 0, len(items))
	for _, raw := range items {
		m, err := decodeResource(raw, keys...)
		if err != nil {
			return err
		}
		out = append(out, m)
	}
	s.out.table = table
	return s.out.print(out)
}

func newCacheDeleteCmd(o *clientOpts) *cobra.Command {
	var (
		t   target
		yes bool
	)
	cmd := &cobra.Command{
		Use:   "delete",
		Short: "Delete a cache rule.",
		Long: `Delete a cache rule. Content already cached stays in the registry.
Asks for confirmation on stdin unless --yes is given.`,
		Example: `  arca cache delete -r MyRegistry -n MyRule
  arca cache delete -r MyRegistry -n MyRule --yes`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireFlags(cmd, "name", "registry"); err != nil {
				return err
			}
			s, err := o.connect()
			if err != nil {
				return err
			}
			if err := confirm(o.env, "Are you sure you want to perform this operation?", yes); err != nil {
				return err
			}
			ctx, cancel := o.context(cmd)
			defer cancel()
			_, path, err := s.rulePath(ctx, t)
			if err != nil {
				return err
			}
			_, err = s.call(ctx, http.MethodDelete, withAPIVersion(path), nil)
			return err
		},
	}
	t.addFlags(cmd.Flags(), "The name of the cache rule.")
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "Do not prompt for confirmation.")
	return cmd
}
