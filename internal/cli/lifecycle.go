package cli

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

func newCachePurgeCmd(o *clientOpts) *cobra.Command {
	var (
		t         target
		olderThan string
		dryRun    bool
	)
	cmd := &cobra.Command{
		Use:   "purge",
		Short: "Evict a cache rule's cached content (arca extension).",
		Long: `Evict what a cache rule has cached: every manifest (with its tags and the
blob links only it used) and stray blob link of the rule's repositories that
was not pulled within --older-than (default: everything). Pushed content is
never touched. Evicted images are pulled through again on their next pull;
garbage collection reclaims the bytes no repository links any more.
--dry-run lists what would go and changes nothing.

Calls POST .../cacheRules/{name}/purge?api-version=` + apiVersion + ` with
{"olderThanSeconds": N, "dryRun": bool}.`,
		Example: `  arca cache purge -r MyRegistry -n MyRule --older-than 30d --dry-run
  arca cache purge -r MyRegistry -n MyRule --older-than 12h
  arca cache purge -r MyRegistry -n MyRule`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireFlags(cmd, "name", "registry"); err != nil {
				return err
			}
			var age time.Duration
			if olderThan != "" {
				var err error
				if age, err = parseAge(olderThan); err != nil {
					return fmt.Errorf("argument --older-than: %w", err)
				}
			}
			return o.onResource(cmd, t, ruleKind, func(ctx context.Context, s *session, _, path string) error {
				raw, err := s.call(ctx, http.MethodPost, withAPIVersion(path+"/purge"),
					map[string]any{"olderThanSeconds": int64(age / time.Second), "dryRun": dryRun})
				if err != nil {
					return unsupported(err, "cache purge")
				}
				return s.printRaw(raw)
			})
		},
	}
	t.addFlags(cmd.Flags(), "The name of the cache rule.")
	cmd.Flags().StringVar(&olderThan, "older-than", "", "Only content not pulled for this long: 30d, 12h, 90m (default: all of the rule's cached content).")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "Report what would be evicted; change nothing.")
	return cmd
}

// parseAge reads a duration of days ("30d") or a Go duration ("12h",
// "1h30m"); it must not be negative.
func parseAge(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if n, ok := strings.CutSuffix(s, "d"); ok {
		d, err := strconv.Atoi(n)
		if err != nil || d < 0 || d > 36500 {
			return 0, fmt.Errorf("%q is not a number of days (0 to 36500)", s)
		}
		return time.Duration(d) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%q is not a duration: use days (30d) or hours and minutes (12h, 90m)", s)
	}
	return d, nil
}

// usageTable shows NAME, LIMIT, CURRENT VALUE, UNIT as az acr show-usage does.
func usageTable(v any) (any, map[string]int) {
	m, _ := v.(map[string]any)
	list, _ := m["value"].([]any)
	rows := make([]any, 0, len(list))
	for _, x := range list {
		u, _ := x.(map[string]any)
		rows = append(rows, map[string]any{"NAME": u["name"], "LIMIT": u["limit"], "CURRENT VALUE": u["currentValue"], "UNIT": u["unit"]})
	}
	return rows, map[string]int{"NAME": 0, "LIMIT": 1, "CURRENT VALUE": 2, "UNIT": 3}
}

func newShowUsageCmd(env Env) *cobra.Command {
	var name, rg string
	cmd := &cobra.Command{
		Use:   "show-usage",
		Short: "Show a registry's storage usage against its quotas (az acr show-usage).",
		Long: `Show what a registry holds: Size (all bytes), PushedSize against the
storage quota, CachedSize against the cache quota and CachedSize/<rule> per
cache rule, in bytes (limit 0: no quota). A blob in two repositories counts
in each, as the quotas count it.`,
		Example: `  arca show-usage -n myregistry
  arca show-usage -n myregistry -o table`,
		Args: cobra.NoArgs,
	}
	o := clientCmd(env, cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := requireFlags(cmd, "name"); err != nil {
			return err
		}
		return o.onPath(cmd, registryAt(name, rg), func(ctx context.Context, s *session, path string) error {
			raw, err := s.call(ctx, http.MethodGet, withAPIVersion(path+"/listUsages"), nil)
			if err != nil {
				return unsupported(err, "show-usage")
			}
			s.out.table = usageTable
			return s.printRaw(raw)
		})
	}
	cmd.Flags().StringVarP(&name, "name", "n", "", "The name of the container registry.")
	cmd.Flags().StringVarP(&rg, "resource-group", "g", "", "Name of resource group.")
	return cmd
}
