package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/arcacache/arca/internal/rules"
)

// Sync modes and referrer settings as the 2025-09-01-preview API spells them.
const (
	activeSync  = "ActiveSync"
	passiveSync = "PassiveSync"
	enabled     = "Enabled"
	disabled    = "Disabled"
)

// The extension's client-side messages, verbatim (see the spec, 1.3).
var (
	errReferrersNeedActive = errors.New("Syncing referrers requires sync to be set to 'activesync'. Please update your cache rule configuration.")
	errArtifactInclExcl    = errors.New("You cannot specify both include_artifact_types and exclude_artifact_types. Please choose one.")
	errImageInclExcl       = errors.New("You cannot specify both include_image_types and exclude_image_types. Please choose one.")
	errFiltersNeedActive   = errors.New("Artifact sync filters (--include-artifact-types, --exclude-artifact-types, --include-image-types, --exclude-image-types, --platforms, --starts-with, --ends-with, --contains, --tag, --tag-equals, --tag-starts-with, --tag-ends-with, --tag-contains) require --sync activesync.")
	errSourceHasTag        = errors.New("Source repository should not include a tag. Please use the --tag-equals parameter to specify tag for filtering.")
)

const (
	promptCreate = "Your cache rule has Artifact Sync enabled and will automatically import tags into your registry. This may incur additional storage charges. Run with the dry-run flag for details. Continue?"
	promptUpdate = "Your cache rule has Artifact Sync enabled and will automatically import tags into your registry. This may incur additional storage charges. Continue?"
)

// tagFilter is the tag part of the artifact sync filters (--tag-starts-with
// and the others), made into KQL as the extension does.
type tagFilter = rules.SimpleTagFilter

// JSON shapes of the 2025-09-01-preview API.
type (
	tagQuery struct {
		Type  string `json:"type"`
		Query string `json:"query"`
	}
	valuesFilter struct {
		Type   string   `json:"type"`
		Values []string `json:"values"`
	}
	syncFilters struct {
		Tags          *tagQuery     `json:"tags,omitempty"`
		Platforms     *valuesFilter `json:"platforms,omitempty"`
		ArtifactTypes *valuesFilter `json:"artifactTypes,omitempty"`
		ImageTypes    *valuesFilter `json:"imageTypes,omitempty"`
	}
	identityBody struct {
		Type                   string              `json:"type"`
		UserAssignedIdentities map[string]struct{} `json:"userAssignedIdentities,omitempty"`
	}
	// ruleProps is a full rule, as PUT sends it; credentialSetResourceId
	// is sent as null when there is none, as az does.
	ruleProps struct {
		SourceRepository        string       `json:"sourceRepository"`
		TargetRepository        string       `json:"targetRepository"`
		CredentialSetResourceID *string      `json:"credentialSetResourceId"`
		SyncMode                string       `json:"syncMode,omitempty"`
		SyncReferrers           string       `json:"syncReferrers,omitempty"`
		ArtifactSyncFilters     *syncFilters `json:"artifactSyncFilters,omitempty"`
		RetentionDays           int          `json:"retentionDays,omitempty"`
	}
	ruleBody struct {
		Properties ruleProps     `json:"properties"`
		Identity   *identityBody `json:"identity,omitempty"`
	}
	// rulePatchProps leaves out what does not change.
	rulePatchProps struct {
		CredentialSetResourceID *string      `json:"credentialSetResourceId,omitempty"`
		SyncMode                string       `json:"syncMode,omitempty"`
		SyncReferrers           string       `json:"syncReferrers,omitempty"`
		ArtifactSyncFilters     *syncFilters `json:"artifactSyncFilters,omitempty"`
		RetentionDays           *int         `json:"retentionDays,omitempty"`
		// removeFilters sends artifactSyncFilters: null (a rule turned
		// PassiveSync drops its filters).
		removeFilters bool
	}
	rulePatchBody struct {
		Properties rulePatchProps `json:"properties"`
		Identity   *identityBody  `json:"identity,omitempty"`
	}
)

// filterFlags are the artifact sync filter options of create and update.
type filterFlags struct {
	platforms, inclArtifact, exclArtifact, inclImage, exclImage []string
	tags                                                        tagFilter
}

func (f filterFlags) any() bool {
	return len(f.platforms) > 0 || len(f.inclArtifact) > 0 || len(f.exclArtifact) > 0 ||
		len(f.inclImage) > 0 || len(f.exclImage) > 0 || !f.tags.IsZero()
}

func (f filterFlags) check() error {
	if len(f.inclArtifact) > 0 && len(f.exclArtifact) > 0 {
		return errArtifactInclExcl
	}
	if len(f.inclImage) > 0 && len(f.exclImage) > 0 {
		return errImageInclExcl
	}
	return nil
}

// apply overlays the given filters on base (the rule's current filters,
// or nil): each kind given replaces that kind, the others are kept.
func (f filterFlags) apply(base *syncFilters) *syncFilters {
	out := &syncFilters{}
	if base != nil {
		*out = *base
	}
	if !f.tags.IsZero() {
		out.Tags = &tagQuery{Type: "KQL", Query: f.tags.Query()}
	}
	if len(f.platforms) > 0 {
		out.Platforms = &valuesFilter{Type: "array", Values: f.platforms}
	}
	switch {
	case len(f.inclArtifact) > 0:
		out.ArtifactTypes = &valuesFilter{Type: "include", Values: f.inclArtifact}
	case len(f.exclArtifact) > 0:
		out.ArtifactTypes = &valuesFilter{Type: "exclude", Values: f.exclArtifact}
	}
	switch {
	case len(f.inclImage) > 0:
		out.ImageTypes = &valuesFilter{Type: "include", Values: f.inclImage}
	case len(f.exclImage) > 0:
		out.ImageTypes = &valuesFilter{Type: "exclude", Values: f.exclImage}
	}
	return out
}

// hasTagFilter says whether filters restrict tags (anything but "Tags").
func (s *syncFilters) hasTagFilter() bool {
	return s != nil && s.Tags != nil && strings.TrimSpace(s.Tags.Query) != "" && !strings.EqualFold(strings.TrimSpace(s.Tags.Query), "Tags")
}

// checkSource applies the extension's tag check, but only to the last
// path segment: a source login server may carry a port (host:5000/x).
func checkSource(src string) error {
	last := src[strings.LastIndex(src, "/")+1:]
	if strings.Contains(last, ":") {
		return errSourceHasTag
	}
	return nil
}

// userAssigned builds the identity block for a user-assigned identity id.
func userAssigned(id string) (*identityBody, error) {
	if id == "" {
		return nil, nil
	}
	if !uamiRe.MatchString(id) {
		return nil, fmt.Errorf("Invalid user-assigned managed identity resource ID: %s", id)
	}
	return &identityBody{Type: "UserAssigned", UserAssignedIdentities: map[string]struct{}{id: {}}}, nil
}

// newRuleBody is the PUT body of rule p in registry registryID with
// credential set credSet (none if "") and filters f; an ActiveSync rule
// without tag filter syncs every tag, as the extension sends it.
func newRuleBody(registryID string, p ruleProps, credSet string, ident *identityBody, f filterFlags) ruleBody {
	b := ruleBody{Identity: ident, Properties: p}
	if credSet != "" {
		b.Properties.CredentialSetResourceID = strPtr(registryID + "/credentialSets/" + credSet)
	}
	if p.SyncMode == activeSync {
		sf := f.apply(nil)
		if sf.Tags == nil {
			sf.Tags = &tagQuery{Type: "KQL", Query: "Tags"}
		}
		b.Properties.ArtifactSyncFilters = sf
	}
	return b
}

// existingRule is what the CLI needs from a GET of a rule.
type existingRule struct {
	ID         string `json:"id"`
	Properties struct {
		SourceRepository        string       `json:"sourceRepository"`
		TargetRepository        string       `json:"targetRepository"`
		CredentialSetResourceID string       `json:"credentialSetResourceId"`
		SyncMode                string       `json:"syncMode"`
		SyncReferrers           string       `json:"syncReferrers"`
		ArtifactSyncFilters     *syncFilters `json:"artifactSyncFilters"`
		RetentionDays           int          `json:"retentionDays"`
	} `json:"properties"`
	Identity *struct {
		Type                   string                     `json:"type"`
		UserAssignedIdentities map[string]json.RawMessage `json:"userAssignedIdentities"`
	} `json:"identity"`
}

// identityIDs returns the user-assigned identity ids of a rule.
func (r existingRule) identityID() string {
	if r.Identity == nil || !strings.Contains(strings.ToLower(r.Identity.Type), "userassigned") {
		return ""
	}
	for id := range r.Identity.UserAssignedIdentities {
		return id
	}
	return ""
}

// MarshalJSON is the struct's JSON, with artifactSyncFilters null when
// removeFilters is set.
func (p rulePatchProps) MarshalJSON() ([]byte, error) {
	type plain rulePatchProps
	if !p.removeFilters {
		return json.Marshal(plain(p))
	}
	return json.Marshal(struct {
		plain
		ArtifactSyncFilters *syncFilters `json:"artifactSyncFilters"`
	}{plain: plain(p)})
}

func (r existingRule) activeSync() bool {
	return strings.EqualFold(r.Properties.SyncMode, activeSync)
}

// canonicalEnum maps a server's spelling (the API echoes camelCase
// enums) to the canonical one, keeping unknown values.
func canonicalEnum(v string, choices ...string) string {
	for _, c := range choices {
		if strings.EqualFold(v, c) {
			return c
		}
	}
	return v
}

func strPtr(s string) *string { return &s }
