package cli

import (
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
		newCacheListCmd(o), newCacheDeleteCmd(o), newCacheSyncCmd(o), newCachePurgeCmd(o))
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

// cacheRuleTable picks the columns of -o table.
var cacheRuleTable = columnTable([]string{"name", "sourceRepository", "targetRepository", "credentialSet", "syncMode", "provisioningState", "creationDate"},
	func(m, r map[string]any) {
		if id := str(m, "credentialSetResourceId"); id != "" {
			r["credentialSet"] = id[strings.LastIndex(id, "/")+1:]
		}
	})

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
			return o.showResource(cmd, t, ruleKind)
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
			return o.showResource(cmd, t, ruleKind)
		},
	}
	t.addFlags(cmd.Flags(), "")
	return cmd
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
			return o.deleteResource(cmd, t, ruleKind, yes)
		},
	}
	t.addFlags(cmd.Flags(), "The name of the cache rule.")
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "Do not prompt for confirmation.")
	return cmd
}
