package cli

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// ruleFlags are the options create and update share.
type ruleFlags struct {
	t              target
	credSet        string
	identity       string // --identity (core az)
	assignIdentity string // --assign-identity/-i (extension)
	sync           string
	syncReferrers  string
	yes            bool
	retentionDays  int
	filters        filterFlags
	// legacy and new tag filter spellings
	startsWith, endsWith, containsStr, tag string
}

func (f *ruleFlags) addFlags(fs *pflag.FlagSet) {
	f.t.addFlags(fs, "The name of the cache rule.")
	fs.StringVarP(&f.credSet, "cred-set", "c", "", "The name of the credential set.")
	fs.StringVar(&f.identity, "identity", "", "Resource ID of a user-assigned managed identity to authenticate to the source registry (same as --assign-identity).")
	fs.StringVarP(&f.assignIdentity, "assign-identity", "i", "", "User-assigned managed identity resource ID for authenticating with the ACR source registry. Format: /subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{identityName}")
	fs.StringVar(&f.sync, "sync", "", "PassiveSync: pull-through cache; ActiveSync: actively synchronize artifacts from the upstream repository. Default is PassiveSync.")
	fs.StringVar(&f.syncReferrers, "sync-referrers", "", "Enable or disable syncing the referrers of the artifacts (Enabled, Disabled). Default is Disabled.")
	fs.BoolVarP(&f.yes, "yes", "y", false, "Do not prompt for confirmation.")
	fs.IntVar(&f.retentionDays, "retention-days", 0, "Evict cached content not pulled for this many days (arca extension; 0: keep it until the registry's cache quota needs the space). Rules in ActiveSync are exempt while they sync.")
	fs.StringSliceVar(&f.filters.platforms, "platforms", nil, "A list of platforms to filter the artifacts by, e.g. linux/amd64,linux/arm64.")
	fs.StringSliceVar(&f.filters.inclArtifact, "include-artifact-types", nil, "Artifact types to sync, e.g. application/vnd.cncf.notary.signature.")
	fs.StringSliceVar(&f.filters.exclArtifact, "exclude-artifact-types", nil, "Artifact types not to sync.")
	fs.StringSliceVar(&f.filters.inclImage, "include-image-types", nil, "Image (manifest) media types to sync, e.g. application/vnd.oci.image.manifest.v1+json.")
	fs.StringSliceVar(&f.filters.exclImage, "exclude-image-types", nil, "Image (manifest) media types not to sync.")
	fs.StringVar(&f.filters.tags.StartsWith, "tag-starts-with", "", "Only sync the tags that start with the specified string.")
	fs.StringVar(&f.filters.tags.EndsWith, "tag-ends-with", "", "Only sync the tags that end with the specified string.")
	fs.StringVar(&f.filters.tags.Contains, "tag-contains", "", "Only sync the tags that contain the specified string.")
	fs.StringVar(&f.filters.tags.Equals, "tag-equals", "", "Only sync the artifacts with this exact tag name.")
	fs.StringVar(&f.startsWith, "starts-with", "", "Legacy form of --tag-starts-with.")
	fs.StringVar(&f.endsWith, "ends-with", "", "Legacy form of --tag-ends-with.")
	fs.StringVar(&f.containsStr, "contains", "", "Legacy form of --tag-contains.")
	fs.StringVar(&f.tag, "tag", "", "Legacy form of --tag-equals.")
}

// mergeTags warns about legacy flags (wording of create or update) and
// lets the --tag-* forms win, as the extension does.
func (f *ruleFlags) mergeTags(cmd *cobra.Command, env Env, when string) {
	var used []string
	for _, n := range []string{"tag", "starts-with", "ends-with", "contains"} {
		if cmd.Flags().Changed(n) {
			used = append(used, "--"+n)
		}
	}
	if len(used) > 0 {
		warn(env, "Option %s will be deprecated %s. Use %s instead.", strings.Join(used, ", "), when,
			"--tag-equals, --tag-starts-with, --tag-ends-with, --tag-contains")
	}
	t := &f.filters.tags
	t.Equals = firstNonEmpty(t.Equals, f.tag)
	t.StartsWith = firstNonEmpty(t.StartsWith, f.startsWith)
	t.EndsWith = firstNonEmpty(t.EndsWith, f.endsWith)
	t.Contains = firstNonEmpty(t.Contains, f.containsStr)
}

// enums canonicalises --sync and --sync-referrers when given.
func (f *ruleFlags) enums(cmd *cobra.Command) error {
	var err error
	if cmd.Flags().Changed("sync") {
		if f.sync, err = canonicalChoice("--sync", f.sync, activeSync, passiveSync); err != nil {
			return err
		}
	}
	if cmd.Flags().Changed("sync-referrers") {
		if f.syncReferrers, err = canonicalChoice("--sync-referrers", f.syncReferrers, enabled, disabled); err != nil {
			return err
		}
	}
	return nil
}

// identityArg returns the one identity given by --identity or -i.
func (f *ruleFlags) identityArg() (string, error) {
	if f.identity != "" && f.assignIdentity != "" && f.identity != f.assignIdentity {
		return "", errors.New("--identity and --assign-identity name different identities; give one")
	}
	return firstNonEmpty(f.assignIdentity, f.identity), nil
}

type cacheCreate struct {
	ruleFlags
	source, target string
	dryRun         bool
}

func newCacheCreateCmd(o *clientOpts) *cobra.Command {
	c := &cacheCreate{}
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Create a cache rule.",
		Long: `Create a cache rule mapping --target-repo in the registry to --source-repo
upstream. With --sync activesync the rule also syncs tags on its own, narrowed
by the filter options; without a tag filter that asks for confirmation
(stdin) unless --yes. --dry-run asks the server which tags would be synced
and creates nothing.`,
		Example: `  arca cache create -r MyRegistry -n MyRule -s docker.io/library/ubuntu -t ubuntu -c MyDockerHubCredSet
  arca cache create -r MyRegistry -n MyRule -s mcr.microsoft.com/dotnet/* -t dotnet/*
  arca cache create -r MyRegistry -n MyRule -s upstreamregistry.azurecr.io/myapp -t myapp \
    --assign-identity /subscriptions/<subscription-id>/resourceGroups/<resource-group>/providers/Microsoft.ManagedIdentity/userAssignedIdentities/<identity-name>
  arca cache create -r MyRegistry -n MyRule -s ghcr.io/org/app -t app \
    --sync activesync --platforms linux/amd64,linux/arm64 --sync-referrers enabled \
    --include-artifact-types images,notary-project-signature
  arca cache create -r MyRegistry -n MyRule -s ghcr.io/org/app -t app --sync activesync --tag-starts-with v1. --dry-run`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return c.run(cmd, o) },
	}
	fs := cmd.Flags()
	c.addFlags(fs)
	fs.StringVarP(&c.source, "source-repo", "s", "", "The full source repository path such as 'docker.io/library/ubuntu'.")
	fs.StringVarP(&c.target, "target-repo", "t", "", "The target repository namespace such as 'ubuntu'.")
	fs.BoolVar(&c.dryRun, "dry-run", false, "Do not create the cache rule but instead return the tags that will be synced. Can only be used with --sync activesync.")
	return cmd
}

// validate runs the extension's checks in the extension's order.
func (c *cacheCreate) validate(cmd *cobra.Command, env Env) error {
	if err := requireFlags(cmd, "name", "registry", "source-repo", "target-repo"); err != nil {
		return err
	}
	c.mergeTags(cmd, env, "in the future")
	if err := c.enums(cmd); err != nil {
		return err
	}
	active := c.sync == activeSync
	if c.syncReferrers == enabled && !active {
		return errReferrersNeedActive
	}
	if err := c.filters.check(); err != nil {
		return err
	}
	if c.sync != "" && !active && c.filters.any() {
		return errFiltersNeedActive
	}
	if c.sync == "" && c.filters.any() {
		warn(env, "Artifact sync filters are ignored without --sync activesync.")
	}
	if c.dryRun && !active {
		return errors.New("--dry-run can only be used with --sync activesync.")
	}
	return checkSource(c.source)
}

// body builds the PUT body; registryID is the registry's ARM id.
func (c *cacheCreate) body(registryID string) (ruleBody, error) {
	id, err := c.identityArg()
	if err != nil {
		return ruleBody{}, err
	}
	ident, err := userAssigned(id)
	if err != nil {
		return ruleBody{}, err
	}
	return newRuleBody(registryID, ruleProps{
		SourceRepository: c.source,
		TargetRepository: c.target,
		SyncMode:         c.sync,
		SyncReferrers:    c.syncReferrers,
		RetentionDays:    c.retentionDays,
	}, c.credSet, ident, c.filters), nil
}

func (c *cacheCreate) run(cmd *cobra.Command, o *clientOpts) error {
	if err := c.validate(cmd, o.env); err != nil {
		return err
	}
	// The identity is checked before any request, as the extension does.
	if id, err := c.identityArg(); err != nil {
		return err
	} else if _, err := userAssigned(id); err != nil {
		return err
	}
	return o.onResource(cmd, c.t, ruleKind, func(ctx context.Context, s *session, base, path string) error {
		body, err := c.body(base)
		if err != nil {
			return err
		}
		if c.dryRun {
			return s.estimate(ctx, base, body)
		}
		if c.sync == activeSync && c.filters.tags.IsZero() {
			if err := confirm(o.env, promptCreate, c.yes); err != nil {
				return err
			}
		}
		raw, err := s.call(ctx, http.MethodPut, withAPIVersion(path), body)
		if err != nil {
			return err
		}
		return s.printResource(raw, ruleKind)
	})
}
