package rules

import (
	"regexp"
	"strings"
	"time"

	"github.com/arcacache/arca/internal/syncer/artifactkind"
)

// SyncMode says whether a rule only pulls through (PassiveSync, the
// default) or also synchronises matching tags ahead of pulls (ActiveSync).
type SyncMode string

// Sync modes (their JSON spelling).
const (
	PassiveSync SyncMode = "PassiveSync"
	ActiveSync  SyncMode = "ActiveSync"
)

// Provisioning states arca reports. Every change commits before the API
// answers, so stored resources are always Succeeded.
const (
	StateCreating  = "Creating"
	StateUpdating  = "Updating"
	StateSucceeded = "Succeeded"
)

// Rule is a cache rule: pulls of TargetRepository are served from
// SourceRepository upstream.
type Rule struct {
	Name   string
	Source string // sourceRepository, e.g. docker.io/library/* or mcr.microsoft.com/dotnet/sdk
	Target string // targetRepository, e.g. dockerhub/*, *, or sdk
	// CredentialSet names a credential set of the same registry ("" = anonymous).
	CredentialSet string
	// Identity is the user-assigned identity's ARM ID, for registry-to-registry caching.
	Identity      string
	SyncMode      SyncMode // "" means PassiveSync
	SyncReferrers string   // "", "Enabled" or "Disabled"
	Filters       Filters
	// RetentionDays evicts the rule's cached content not pulled for this
	// many days (0: kept until a quota or purge needs the space); an arca
	// extension.
	RetentionDays int

	ProvisioningState string
	CreatedAt         time.Time
	ModifiedAt        time.Time
	// SyncStatus is the progress of active sync (nil until it has run).
	SyncStatus *SyncStatus

	src Source // parsed by Validate / NewIndex
	tgt Target
}

// Filters are artifactSyncFilters: which artifacts ActiveSync copies.
type Filters struct {
	Tags          string   // KQL query over Tags, "" = none
	Platforms     []string // os/arch[/variant]
	ImageTypes    *KindFilter
	ArtifactTypes *KindFilter
}

// IsZero reports whether no filter is set.
func (f Filters) IsZero() bool {
	return f.Tags == "" && len(f.Platforms) == 0 && f.ImageTypes == nil && f.ArtifactTypes == nil
}

// KindFilter includes or excludes media types. One JSON object carries a
// single type, so "include and exclude of the same kind" cannot be sent.
type KindFilter struct {
	Type   string // "include" or "exclude"
	Values []string
}

// SyncStatus is the state of a rule's active sync (written by the syncer).
type SyncStatus struct {
	Status       string    `json:"status"`
	LastSyncTime time.Time `json:"lastSyncTime,omitzero"`
	LastError    string    `json:"lastError,omitempty"`
	SyncedTags   int       `json:"syncedTags,omitempty"`
}

// Wildcard reports whether the rule's target ends in a wildcard.
func (r *Rule) Wildcard() bool { return strings.HasSuffix(r.Target, "*") }

// Mode is the effective sync mode.
func (r *Rule) Mode() SyncMode {
	if r.SyncMode == "" {
		return PassiveSync
	}
	return r.SyncMode
}

// ParsedSource returns the parsed source; valid after Validate.
func (r *Rule) ParsedSource() Source { return r.src }

var (
	platformRe  = regexp.MustCompile(`^[a-z0-9._-]+/[a-z0-9._-]+(/[a-z0-9._-]+)?$`)
	mediaTypeRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$`)
	uamiRe      = regexp.MustCompile(`(?i)^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.ManagedIdentity/userAssignedIdentities/[^/]+$`)
)

// Validate checks everything about r that does not depend on other
// resources, and records the parsed source and target in r.
func (r *Rule) Validate() error {
	if err := ValidateName("cache rule", r.Name); err != nil {
		return err
	}
	src, err := ParseSource(r.Source)
	if err != nil {
		return err
	}
	tgt, err := ParseTarget(r.Target)
	if err != nil {
		return err
	}
	if src.Wildcard != tgt.Wildcard {
		return errorf(CodeInvalidWildcard, "sourceRepository %q and targetRepository %q: either both end in a wildcard (source <login server>/<path>/* or <login server>/*, target <path>/* or *) or neither does", r.Source, r.Target)
	}
	r.src, r.tgt = src, tgt
	if IsDockerHub(src.LoginServer) && r.CredentialSet == "" {
		return &Error{Code: CodeDockerAuth, Message: MsgDockerAuth}
	}
	if r.Identity != "" && !uamiRe.MatchString(r.Identity) {
		return errorf(CodeInvalidIdentity, "Invalid user-assigned managed identity resource ID: %s (expected /subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{identityName})", r.Identity)
	}
	if r.RetentionDays < 0 || r.RetentionDays > MaxRetentionDays {
		return errorf(CodeInvalidRetention, "retentionDays %d is invalid: use 0 (keep until a quota needs the space) to %d days", r.RetentionDays, MaxRetentionDays)
	}
	return r.validateSync()
}

// MaxRetentionDays bounds a rule's retentionDays (ten years).
const MaxRetentionDays = 3650

func (r *Rule) validateSync() error {
	switch r.SyncMode {
	case "", PassiveSync, ActiveSync:
	default:
		return errorf(CodeInvalidSync, "syncMode %q is invalid: use PassiveSync or ActiveSync", r.SyncMode)
	}
	switch r.SyncReferrers {
	case "", "Disabled":
	case "Enabled":
		if r.Mode() != ActiveSync {
			return errorf(CodeInvalidSync, "syncReferrers 'Enabled' requires syncMode 'ActiveSync': syncing referrers requires sync to be set to 'activesync'")
		}
	default:
		return errorf(CodeInvalidSync, "syncReferrers %q is invalid: use Enabled or Disabled", r.SyncReferrers)
	}
	if r.Filters.IsZero() {
		return nil
	}
	if r.Mode() != ActiveSync {
		return errorf(CodeInvalidSync, "artifactSyncFilters (tags, platforms, imageTypes, artifactTypes) require syncMode 'ActiveSync'")
	}
	return r.Filters.validate()
}

func (f Filters) validate() error {
	if f.Tags != "" {
		if _, err := ParseTagQuery(f.Tags); err != nil {
			return err
		}
	}
	for _, p := range f.Platforms {
		if !platformRe.MatchString(p) {
			return errorf(CodeInvalidSync, "artifactSyncFilters.platforms: %q is not a platform: use os/architecture[/variant], e.g. linux/amd64", p)
		}
	}
	for _, kf := range []struct {
		field string
		f     *KindFilter
	}{{"imageTypes", f.ImageTypes}, {"artifactTypes", f.ArtifactTypes}} {
		if kf.f == nil {
			continue
		}
		if kf.f.Type != "include" && kf.f.Type != "exclude" {
			return errorf(CodeInvalidSync, "artifactSyncFilters.%s.type %q is invalid: use include or exclude (not both)", kf.field, kf.f.Type)
		}
		if len(kf.f.Values) == 0 {
			return errorf(CodeInvalidSync, "artifactSyncFilters.%s.values must list at least one media type", kf.field)
		}
		for _, v := range kf.f.Values {
			if kf.field == "artifactTypes" && artifactkind.IsAlias(v) {
				continue
			}
			if !mediaTypeRe.MatchString(v) {
				if kf.field == "artifactTypes" {
					return errorf(CodeInvalidSync, "artifactSyncFilters.artifactTypes: %q is neither a media type (type/subtype) nor one of %s", v, strings.Join(artifactkind.Names(), ", "))
				}
				return errorf(CodeInvalidSync, "artifactSyncFilters.%s: %q is not a media type (type/subtype)", kf.field, v)
			}
		}
	}
	return nil
}
