package mgmt

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	"github.com/arcacache/arca/internal/armtime"
	"github.com/arcacache/arca/internal/metadata"
	"github.com/arcacache/arca/internal/rules"
)

// ARM resource types.
const (
	typeCacheRule     = "Microsoft.ContainerRegistry/registries/cacheRules"
	typeCredentialSet = "Microsoft.ContainerRegistry/registries/credentialSets"
	typeRegistry      = "Microsoft.ContainerRegistry/registries"
)

// systemData: arca has one principal, the admin token ("Key" in ARM's
// createdByType vocabulary).
type systemData struct {
	CreatedBy          string `json:"createdBy"`
	CreatedByType      string `json:"createdByType"`
	CreatedAt          string `json:"createdAt"`
	LastModifiedBy     string `json:"lastModifiedBy"`
	LastModifiedByType string `json:"lastModifiedByType"`
	LastModifiedAt     string `json:"lastModifiedAt"`
}

func newSystemData(created, modified time.Time) *systemData {
	return &systemData{CreatedBy: "admin", CreatedByType: "Key", CreatedAt: armtime.Format(created),
		LastModifiedBy: "admin", LastModifiedByType: "Key", LastModifiedAt: armtime.Format(modified)}
}

// identityJSON is ARM's IdentityProperties. ACR echoes the type in camel
// case ("userAssigned", "systemAssigned"); arca does the same and accepts
// any case.
type identityJSON struct {
	PrincipalID            string                     `json:"principalId,omitempty"`
	TenantID               string                     `json:"tenantId,omitempty"`
	Type                   string                     `json:"type,omitempty"`
	UserAssignedIdentities map[string]json.RawMessage `json:"userAssignedIdentities,omitempty"`
}

// ---- cache rules ----

type cacheRuleJSON struct {
	ID         string             `json:"id"`
	Name       string             `json:"name"`
	Type       string             `json:"type"`
	SystemData *systemData        `json:"systemData,omitempty"`
	Identity   *identityJSON      `json:"identity,omitempty"`
	Properties cacheRulePropsJSON `json:"properties"`
}

type cacheRulePropsJSON struct {
	CredentialSetResourceID *string             `json:"credentialSetResourceId,omitempty"`
	SourceRepository        string              `json:"sourceRepository"`
	TargetRepository        string              `json:"targetRepository"`
	CreationDate            string              `json:"creationDate,omitempty"`
	ProvisioningState       string              `json:"provisioningState,omitempty"`
	SyncMode                string              `json:"syncMode,omitempty"`
	SyncReferrers           string              `json:"syncReferrers,omitempty"`
	ArtifactSyncFilters     *filtersJSON        `json:"artifactSyncFilters,omitempty"`
	ArtifactSyncStatus      *syncStatusJSON     `json:"artifactSyncStatus,omitempty"`
	UpstreamRateLimit       *rateLimitJSON      `json:"upstreamRateLimit,omitempty"`
	UpstreamHealth          *upstreamHealthJSON `json:"upstreamHealth,omitempty"`
	// IdentityStatus is an arca extension: whether the rule's identity
	// can pull from the upstream now (token obtained, exchanged, role).
	IdentityStatus *IdentityStatus `json:"identityStatus,omitempty"`
	// ArtifactSyncRun is an arca extension: the last active-sync run in
	// detail (artifactSyncStatus is the summary ACR shows).
	ArtifactSyncRun any `json:"artifactSyncRun,omitempty"`
	// RetentionDays is an arca extension: cached content not pulled for
	// this many days is evicted (absent: kept).
	RetentionDays int `json:"retentionDays,omitempty"`
}

// rateLimitJSON is an arca extension: the pull budget the upstream last
// reported (Docker Hub's ratelimit-limit/remaining headers).
type rateLimitJSON struct {
	Limit         int    `json:"limit"`
	Remaining     int    `json:"remaining"`
	WindowSeconds int64  `json:"windowSeconds"`
	ObservedAt    string `json:"observedAt"`
}

// rateLimitOf looks up the budget of credential set credSet ("" for
// anonymous pulls) of registry reg on loginServer.
func (h *Handler) rateLimitOf(ctx context.Context, reg, credSet, loginServer string) *rateLimitJSON {
	if h.opts.RateLimits == nil {
		return nil
	}
	key := ""
	if credSet != "" {
		key = rules.CredentialKey(reg, credSet)
	}
	rl, err := h.opts.RateLimits.GetRateLimit(ctx, metadata.RateLimitSource(key, rules.CanonicalLoginServer(loginServer)))
	if err != nil {
		return nil
	}
	return &rateLimitJSON{Limit: rl.Limit, Remaining: rl.Remaining, WindowSeconds: int64(rl.Window.Seconds()), ObservedAt: armtime.Format(rl.ObservedAt)}
}

// IdentityStatus is the outcome of a rule's identity at its upstream:
// Healthy, or Unhealthy with the reason (token not obtainable, exchange
// refused, role missing).
type IdentityStatus struct {
	Status string `json:"status"`
	Reason string `json:"reason,omitempty"`
}

// IdentityChecker checks a rule's identity against its upstream.
type IdentityChecker interface {
	CheckIdentity(ctx context.Context, registry string, r rules.Rule) IdentityStatus
}

// UpstreamHealth is the data plane's view of an upstream host.
type UpstreamHealth struct {
	Healthy     bool
	RateLimited bool // holding requests back after a 429
	Reason      string
	Until       time.Time
}

// upstreamHealthJSON is an arca extension: whether pulls through the rule
// reach its upstream now, or fail fast (and serve cached content) until Until.
type upstreamHealthJSON struct {
	Status string `json:"status"` // Healthy, Unhealthy or RateLimited
	Reason string `json:"reason,omitempty"`
	Until  string `json:"until,omitempty"`
}

func (h *Handler) upstreamHealthOf(loginServer string) *upstreamHealthJSON {
	if h.opts.UpstreamHealth == nil {
		return nil
	}
	st := h.opts.UpstreamHealth(loginServer)
	switch {
	case st.Healthy:
		return &upstreamHealthJSON{Status: "Healthy"}
	case st.RateLimited:
		return &upstreamHealthJSON{Status: "RateLimited", Reason: st.Reason, Until: armtime.Format(st.Until)}
	}
	return &upstreamHealthJSON{Status: "Unhealthy", Reason: st.Reason, Until: armtime.Format(st.Until)}
}

type syncStatusJSON struct {
	Status       string `json:"status"`
	LastSyncTime string `json:"lastSyncTime,omitempty"`
	LastError    string `json:"lastError,omitempty"`
	SyncedTags   int    `json:"syncedTags,omitempty"`
}

type filtersJSON struct {
	Tags          *tagFilterJSON  `json:"tags,omitempty"`
	Platforms     *listFilterJSON `json:"platforms,omitempty"`
	ImageTypes    *listFilterJSON `json:"imageTypes,omitempty"`
	ArtifactTypes *listFilterJSON `json:"artifactTypes,omitempty"`
}

type tagFilterJSON struct {
	Type  string `json:"type"`
	Query string `json:"query"`
}

type listFilterJSON struct {
	Type   string   `json:"type"`
	Values []string `json:"values"`
}

// cacheRuleJSONOf renders r as the given api-version shows it.
func (h *Handler) cacheRuleJSONOf(reg string, r rules.Rule, v apiVersion) cacheRuleJSON {
	out := cacheRuleJSON{
		ID:         h.resourceID(reg, "cacheRules", r.Name),
		Name:       r.Name,
		Type:       typeCacheRule,
		SystemData: newSystemData(r.CreatedAt, r.ModifiedAt),
		Properties: cacheRulePropsJSON{
			SourceRepository:  r.Source,
			TargetRepository:  r.Target,
			CreationDate:      armtime.Format(r.CreatedAt),
			ProvisioningState: r.ProvisioningState,
			RetentionDays:     r.RetentionDays,
		},
	}
	if r.CredentialSet != "" {
		id := h.resourceID(reg, "credentialSets", r.CredentialSet)
		out.Properties.CredentialSetResourceID = &id
	}
	if !v.extended {
		return out
	}
	if r.Identity != "" {
		out.Identity = &identityJSON{Type: "userAssigned", UserAssignedIdentities: map[string]json.RawMessage{r.Identity: json.RawMessage(`{}`)}}
	}
	p := &out.Properties
	p.SyncMode, p.SyncReferrers = string(r.Mode()), r.SyncReferrers
	if !r.Filters.IsZero() {
		f := r.Filters
		p.ArtifactSyncFilters = &filtersJSON{ImageTypes: kindJSON(f.ImageTypes), ArtifactTypes: kindJSON(f.ArtifactTypes)}
		if f.Tags != "" {
			p.ArtifactSyncFilters.Tags = &tagFilterJSON{Type: "KQL", Query: f.Tags}
		}
		if len(f.Platforms) > 0 {
			p.ArtifactSyncFilters.Platforms = &listFilterJSON{Type: "array", Values: f.Platforms}
		}
	}
	if s := r.SyncStatus; s != nil {
		p.ArtifactSyncStatus = &syncStatusJSON{Status: s.Status, LastSyncTime: armtime.Format(s.LastSyncTime), LastError: s.LastError, SyncedTags: s.SyncedTags}
	}
	return out
}

func kindJSON(k *rules.KindFilter) *listFilterJSON {
	if k == nil {
		return nil
	}
	return &listFilterJSON{Type: k.Type, Values: k.Values}
}

// ---- credential sets ----

type credentialSetJSON struct {
	ID         string                 `json:"id"`
	Name       string                 `json:"name"`
	Type       string                 `json:"type"`
	SystemData *systemData            `json:"systemData,omitempty"`
	Identity   *identityJSON          `json:"identity,omitempty"`
	Properties credentialSetPropsJSON `json:"properties"`
}

type credentialSetPropsJSON struct {
	LoginServer       string           `json:"loginServer"`
	AuthCredentials   []authCredential `json:"authCredentials"`
	CreationDate      string           `json:"creationDate,omitempty"`
	ProvisioningState string           `json:"provisioningState,omitempty"`
	UpstreamRateLimit *rateLimitJSON   `json:"upstreamRateLimit,omitempty"`
}

type authCredential struct {
	Name                     string      `json:"name"`
	UsernameSecretIdentifier string      `json:"usernameSecretIdentifier"`
	PasswordSecretIdentifier string      `json:"passwordSecretIdentifier"`
	CredentialHealth         *healthJSON `json:"credentialHealth,omitempty"`
}

type healthJSON struct {
	Status       string `json:"status"`
	ErrorCode    string `json:"errorCode,omitempty"`
	ErrorMessage string `json:"errorMessage,omitempty"`
}

func (h *Handler) credentialSetJSONOf(reg string, c rules.CredentialSet) credentialSetJSON {
	health := &healthJSON{Status: c.Health.Status, ErrorCode: c.Health.ErrorCode, ErrorMessage: c.Health.ErrorMessage}
	if health.Status == "" {
		health = nil
	}
	id := &identityJSON{PrincipalID: c.PrincipalID, TenantID: h.opts.TenantID, Type: "systemAssigned"}
	if c.Identity != "" {
		id = &identityJSON{Type: "userAssigned", UserAssignedIdentities: map[string]json.RawMessage{c.Identity: json.RawMessage(`{}`)}}
	}
	return credentialSetJSON{
		ID:         h.resourceID(reg, "credentialSets", c.Name),
		Name:       c.Name,
		Type:       typeCredentialSet,
		SystemData: newSystemData(c.CreatedAt, c.ModifiedAt),
		Identity:   id,
		Properties: credentialSetPropsJSON{
			LoginServer: c.LoginServer,
			AuthCredentials: []authCredential{{
				Name:                     rules.CredentialName,
				UsernameSecretIdentifier: c.UsernameRef,
				PasswordSecretIdentifier: c.PasswordRef,
				CredentialHealth:         health,
			}},
			CreationDate:      armtime.Format(c.CreatedAt),
			ProvisioningState: c.ProvisioningState,
		},
	}
}

// resourceID is the ARM ID of a child resource of registry reg.
func (h *Handler) resourceID(reg, kind, name string) string {
	return h.registryID(reg) + "/" + kind + "/" + name
}

func (h *Handler) registryID(reg string) string {
	return "/subscriptions/" + h.opts.SubscriptionID + "/resourceGroups/" + h.opts.ResourceGroup +
		"/providers/Microsoft.ContainerRegistry/registries/" + strings.ToLower(reg)
}
