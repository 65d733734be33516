package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/spf13/cobra"
)

type cacheUpdate struct {
	ruleFlags
	removeCredSet bool
}

func newCacheUpdateCmd(o *clientOpts) *cobra.Command {
	c := &cacheUpdate{}
	cmd := &cobra.Command{
		Use:   "update",
		Short: "Update the credential set, identity, sync mode or filters of a cache rule.",
		Long: `Update a cache rule. Filters not given are kept; a filter kind given
replaces that kind. --remove-cred-set replaces the whole rule (PUT) without
its credential set; everything else is a PATCH.`,
		Example: `  arca cache update -r MyRegistry -n MyRule -c NewCredSet
  arca cache update -r MyRegistry -n MyRule --remove-cred-set
  arca cache update -r MyRegistry -n MyRule \
    --assign-identity /subscriptions/<subscription-id>/resourceGroups/<resource-group>/providers/Microsoft.ManagedIdentity/userAssignedIdentities/<identity-name>
  arca cache update -r MyRegistry -n MyRule --sync activesync --platforms linux/amd64 \
    --sync-referrers enabled --include-artifact-types images`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return c.run(cmd, o) },
	}
	c.addFlags(cmd.Flags())
	cmd.Flags().BoolVar(&c.removeCredSet, "remove-cred-set", false, "Optional boolean indicating whether to remove the credential set from the cache rule. False by default.")
	return cmd
}

// changes reports whether any update option was given.
func (c *cacheUpdate) changes(cmd *cobra.Command) bool {
	for _, n := range []string{"cred-set", "remove-cred-set", "identity", "assign-identity", "sync", "sync-referrers",
		"platforms", "include-artifact-types", "exclude-artifact-types", "include-image-types", "exclude-image-types",
		"tag-starts-with", "tag-ends-with", "tag-contains", "tag-equals", "starts-with", "ends-with", "contains", "tag", "retention-days"} {
		if cmd.Flags().Changed(n) {
			return true
		}
	}
	return false
}

func (c *cacheUpdate) validate(cmd *cobra.Command, env Env) error {
	if err := requireFlags(cmd, "name", "registry"); err != nil {
		return err
	}
	if !c.changes(cmd) {
		return errors.New("You must provide at least one parameter to update (credential set, identity, removal flag, sync mode, referrers, artifact sync filters or retention days).")
	}
	if c.removeCredSet && c.credSet != "" {
		return errors.New("--cred-set and --remove-cred-set cannot be used together.")
	}
	if err := c.enums(cmd); err != nil {
		return err
	}
	if err := c.filters.check(); err != nil {
		return err
	}
	c.mergeTags(cmd, env, "in a future release")
	if c.sync == passiveSync && c.filters.any() {
		return errFiltersNeedActive
	}
	id, err := c.identityArg()
	if err != nil {
		return err
	}
	_, err = userAssigned(id)
	return err
}

func (c *cacheUpdate) run(cmd *cobra.Command, o *clientOpts) error {
	if err := c.validate(cmd, o.env); err != nil {
		return err
	}
	return o.onResource(cmd, c.t, ruleKind, func(ctx context.Context, s *session, base, path string) error {
		raw, err := s.call(ctx, http.MethodGet, withAPIVersion(path), nil)
		if err != nil {
			return err
		}
		var cur existingRule
		if err := json.Unmarshal(raw, &cur); err != nil {
			return fmt.Errorf("reading cache rule %s: %w", c.t.name, err)
		}
		patch, err := c.patch(cmd, o.env, cur, base)
		if err != nil {
			return err
		}
		if patch.Properties.SyncMode == activeSync && c.touchesSync(cmd) && !patch.Properties.ArtifactSyncFilters.hasTagFilter() {
			if err := confirm(o.env, promptUpdate, c.yes); err != nil {
				return err
			}
		}
		if c.removeCredSet {
			raw, err = s.call(ctx, http.MethodPut, withAPIVersion(path), fullRule(cur, patch))
		} else {
			raw, err = s.call(ctx, http.MethodPatch, withAPIVersion(path), patch)
		}
		if err != nil {
			return err
		}
		return s.printResource(raw, ruleKind)
	})
}

// touchesSync says whether the user changed sync settings (only then
// does an ActiveSync rule without tag filter ask for confirmation).
func (c *cacheUpdate) touchesSync(cmd *cobra.Command) bool {
	return cmd.Flags().Changed("sync") || c.filters.any()
}

// patch computes the PATCH body the way the extension does: current
// sync settings kept unless given, current filters kept per kind when
// the rule is (or becomes) ActiveSync.
func (c *cacheUpdate) patch(cmd *cobra.Command, env Env, cur existingRule, registryID string) (rulePatchBody, error) {
	active := (c.sync == "" && cur.activeSync()) || c.sync == activeSync
	if c.syncReferrers == enabled && !active {
		return rulePatchBody{}, errReferrersNeedActive
	}
	if !active && c.filters.any() {
		warn(env, "Artifact sync filters are ignored: cache rule %s does not use ActiveSync (add --sync activesync).", c.t.name)
	}
	p := rulePatchProps{
		SyncMode:      firstNonEmpty(c.sync, canonicalEnum(cur.Properties.SyncMode, activeSync, passiveSync)),
		SyncReferrers: firstNonEmpty(c.syncReferrers, canonicalEnum(cur.Properties.SyncReferrers, enabled, disabled)),
	}
	if active {
		p.ArtifactSyncFilters = c.filters.apply(cur.Properties.ArtifactSyncFilters)
	} else if cur.activeSync() {
		// Back to PassiveSync: the rule's filters and referrer sync would
		// make it invalid (they need ActiveSync), so they go.
		p.removeFilters = cur.Properties.ArtifactSyncFilters != nil
		p.SyncReferrers = firstNonEmpty(c.syncReferrers, disabled)
	}
	// Unlike the extension, a PATCH without -c leaves the credential set
	// alone instead of sending null (which ACR ignores anyway).
	if c.credSet != "" {
		p.CredentialSetResourceID = strPtr(registryID + "/credentialSets/" + c.credSet)
	}
	if cmd.Flags().Changed("retention-days") {
		p.RetentionDays = &c.retentionDays
	}
	id, _ := c.identityArg()
	ident, err := userAssigned(id)
	if err != nil {
		return rulePatchBody{}, err
	}
	return rulePatchBody{Properties: p, Identity: ident}, nil
}

// fullRule is the PUT body of --remove-cred-set: the current rule with
// the patch applied and no credential set.
func fullRule(cur existingRule, p rulePatchBody) ruleBody {
	b := ruleBody{Identity: p.Identity, Properties: ruleProps{
		SourceRepository:    cur.Properties.SourceRepository,
		TargetRepository:    cur.Properties.TargetRepository,
		SyncMode:            p.Properties.SyncMode,
		SyncReferrers:       p.Properties.SyncReferrers,
		ArtifactSyncFilters: p.Properties.ArtifactSyncFilters,
		RetentionDays:       cur.Properties.RetentionDays,
	}}
	if p.Properties.RetentionDays != nil {
		b.Properties.RetentionDays = *p.Properties.RetentionDays
	}
	if b.Identity == nil {
		if id := cur.identityID(); id != "" {
			b.Identity = &identityBody{Type: "UserAssigned", UserAssignedIdentities: map[string]struct{}{id: {}}}
		}
	}
	return b
}
