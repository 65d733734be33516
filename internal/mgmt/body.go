package mgmt

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/arcacache/arca/internal/rules"
)

// opt is a JSON property that remembers whether it was sent and whether it
// was null, which PATCH (merge-patch) semantics need.
type opt[T any] struct {
	Set, Null bool
	V         T
}

func (o *opt[T]) UnmarshalJSON(b []byte) error {
	o.Set = true
	if bytes.Equal(bytes.TrimSpace(b), []byte("null")) {
		o.Null = true
		return nil
	}
	return json.Unmarshal(b, &o.V)
}

// value reports whether a non-null value was sent.
func (o opt[T]) value() bool { return o.Set && !o.Null }

// readBody decodes a JSON request body into v.
func readBody(r *http.Request, v any) error {
	b, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, maxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return &apiError{Status: http.StatusRequestEntityTooLarge, Code: "RequestTooLarge", Message: fmt.Sprintf("The request body exceeds %d bytes.", maxBody)}
		}
		return errBadRequest("InvalidRequestContent", "The request content could not be read.")
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return errBadRequest("InvalidRequestContent", "The request content was null or empty: send a JSON object.")
	}
	if err := json.Unmarshal(b, v); err != nil {
		return errBadRequest("InvalidRequestContent", "The request content was invalid and could not be deserialized: "+describeJSONError(err))
	}
	return nil
}

// describeJSONError names where the JSON went wrong without quoting input
// (which could hold anything).
func describeJSONError(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("malformed JSON at byte %d.", se.Offset)
	case errors.As(err, &te):
		return fmt.Sprintf("property '%s' must be a JSON %s, not %s.", te.Field, jsonKind(te.Type.Kind().String()), te.Value)
	}
	return "not a JSON object of the expected shape."
}

func jsonKind(k string) string {
	switch k {
	case "string":
		return "string"
	case "slice":
		return "array"
	case "struct", "map":
		return "object"
	case "bool":
		return "boolean"
	}
	return k
}

// ---- cache rule bodies (PUT CacheRule, PATCH CacheRuleUpdateParameters) ----

type cacheRuleBody struct {
	Identity   opt[identityJSON]       `json:"identity"`
	Properties opt[cacheRuleBodyProps] `json:"properties"`
}

type cacheRuleBodyProps struct {
	CredentialSetResourceID opt[string]      `json:"credentialSetResourceId"`
	SourceRepository        opt[string]      `json:"sourceRepository"`
	TargetRepository        opt[string]      `json:"targetRepository"`
	SyncMode                opt[string]      `json:"syncMode"`
	SyncReferrers           opt[string]      `json:"syncReferrers"`
	ArtifactSyncFilters     opt[filtersBody] `json:"artifactSyncFilters"`
	// RetentionDays is arca's own (every api-version): cached content not
	// pulled for this many days is evicted; 0 or null keeps it.
	RetentionDays opt[int] `json:"retentionDays"`
	// Properties of other versions arca does not implement: refused rather
	// than silently dropped.
	AdditionalAuthenticationProperties opt[json.RawMessage] `json:"additionalAuthenticationProperties"`
	ArtifactSyncScopeFilterProperties  opt[json.RawMessage] `json:"artifactSyncScopeFilterProperties"`
}

type filtersBody struct {
	Tags          opt[tagFilterJSON]  `json:"tags"`
	Platforms     opt[listFilterJSON] `json:"platforms"`
	ImageTypes    opt[listFilterJSON] `json:"imageTypes"`
	ArtifactTypes opt[listFilterJSON] `json:"artifactTypes"`
}

// applyCacheRule applies body to r: a PUT replaces every property this
// api-version has, a PATCH (patch true) only those sent (null clears).
func (h *Handler) applyCacheRule(r *rules.Rule, body cacheRuleBody, req *request, patch bool) error {
	p := body.Properties.V
	if p.AdditionalAuthenticationProperties.value() {
		return errBadRequest("InvalidRequestContent", "The property 'properties.additionalAuthenticationProperties' (Google Artifact Registry workload identity) is not supported by arca.")
	}
	if p.ArtifactSyncScopeFilterProperties.value() {
		return errBadRequest("InvalidRequestContent", "The property 'properties.artifactSyncScopeFilterProperties' (2024-01-01-preview artifact sync) is not supported by arca: use syncMode and artifactSyncFilters (api-version 2025-09-01-preview).")
	}
	if !req.v.extended {
		for _, f := range []struct {
			name string
			set  bool
		}{{"identity", body.Identity.Set}, {"properties.syncMode", p.SyncMode.Set},
			{"properties.syncReferrers", p.SyncReferrers.Set}, {"properties.artifactSyncFilters", p.ArtifactSyncFilters.Set}} {
			if f.set {
				return errBadRequest("InvalidRequestContent", fmt.Sprintf("The property '%s' is not supported in api-version %s; use a preview api-version such as 2025-09-01-preview.", f.name, req.v.value))
			}
		}
	}
	if !patch || p.SourceRepository.Set {
		r.Source = p.SourceRepository.V
	}
	if !patch || p.TargetRepository.Set {
		r.Target = p.TargetRepository.V
	}
	if !patch || p.CredentialSetResourceID.Set {
		name, err := h.credentialSetName(req.registry, p.CredentialSetResourceID.V)
		if err != nil {
			return err
		}
		r.CredentialSet = name
	}
	if !patch || p.RetentionDays.Set {
		r.RetentionDays = p.RetentionDays.V
	}
	if !req.v.extended {
		return nil // newer properties stay as they are, invisible in this version
	}
	if !patch || body.Identity.Set {
		id, err := cacheRuleIdentity(body.Identity)
		if err != nil {
			return err
		}
		r.Identity = id
	}
	if !patch || p.SyncMode.Set {
		r.SyncMode = rules.SyncMode(canonical(p.SyncMode.V, string(rules.PassiveSync), string(rules.ActiveSync)))
	}
	if !patch || p.SyncReferrers.Set {
		r.SyncReferrers = canonical(p.SyncReferrers.V, "Enabled", "Disabled")
	}
	if !patch || p.ArtifactSyncFilters.Null {
		r.Filters = rules.Filters{}
	}
	if p.ArtifactSyncFilters.value() {
		return applyFilters(&r.Filters, p.ArtifactSyncFilters.V)
	}
	return nil
}

// canonical returns the allowed value v matches ignoring case, else v.
func canonical(v string, allowed ...string) string {
	for _, a := range allowed {
		if strings.EqualFold(v, a) {
			return a
		}
	}
	return v
}

func applyFilters(f *rules.Filters, b filtersBody) error {
	if b.Tags.Set {
		f.Tags = ""
		if b.Tags.value() {
			if !strings.EqualFold(b.Tags.V.Type, "KQL") {
				return &rules.Error{Code: rules.CodeInvalidSync, Message: fmt.Sprintf("artifactSyncFilters.tags.type %q is not supported: use KQL", b.Tags.V.Type)}
			}
			f.Tags = b.Tags.V.Query
		}
	}
	if b.Platforms.Set {
		f.Platforms = nil
		if b.Platforms.value() {
			if t := b.Platforms.V.Type; t != "" && !strings.EqualFold(t, "array") {
				return &rules.Error{Code: rules.CodeInvalidSync, Message: fmt.Sprintf("artifactSyncFilters.platforms.type %q is not supported: use array", t)}
			}
			f.Platforms = b.Platforms.V.Values
		}
	}
	for _, k := range []struct {
		in  opt[listFilterJSON]
		out **rules.KindFilter
	}{{b.ImageTypes, &f.ImageTypes}, {b.ArtifactTypes, &f.ArtifactTypes}} {
		if !k.in.Set {
			continue
		}
		*k.out = nil
		if k.in.value() {
			*k.out = &rules.KindFilter{Type: canonical(k.in.V.Type, "include", "exclude"), Values: k.in.V.Values}
		}
	}
	return nil
}

// cacheRuleIdentity reads a cache rule's identity block: one user-assigned
// identity, or none.
func cacheRuleIdentity(o opt[identityJSON]) (string, error) {
	if !o.value() {
		return "", nil
	}
	switch {
	case strings.EqualFold(o.V.Type, "None"):
		return "", nil
	case strings.EqualFold(o.V.Type, "UserAssigned"):
	default:
		return "", &rules.Error{Code: rules.CodeInvalidIdentity, Message: fmt.Sprintf("identity.type %q is not supported for cache rules: use UserAssigned (or None)", o.V.Type)}
	}
	if len(o.V.UserAssignedIdentities) != 1 {
		return "", &rules.Error{Code: rules.CodeInvalidIdentity, Message: "identity.userAssignedIdentities must hold exactly one user-assigned identity resource ID"}
	}
	for id := range o.V.UserAssignedIdentities {
		return id, nil
	}
	return "", nil
}

// credentialSetIdentity reads a credential set's identity block: the
// identity its Key Vault secrets are read as. SystemAssigned (or no block)
// is the server's Key Vault credential (""); UserAssigned names exactly one
// user-assigned managed identity. One identity reads both secrets, so the
// combined type is refused.
func credentialSetIdentity(o opt[identityJSON]) (string, error) {
	if !o.value() {
		return "", nil
	}
	switch t := o.V.Type; {
	case t == "" && len(o.V.UserAssignedIdentities) == 0, strings.EqualFold(t, "SystemAssigned"):
		if len(o.V.UserAssignedIdentities) > 0 {
			return "", &rules.Error{Code: rules.CodeInvalidIdentity, Message: "identity.userAssignedIdentities must be empty when identity.type is SystemAssigned"}
		}
		return "", nil
	case t == "", strings.EqualFold(t, "UserAssigned"):
	default:
		return "", &rules.Error{Code: rules.CodeInvalidIdentity, Message: fmt.Sprintf(
			"identity.type %q is not supported for credential sets: use SystemAssigned (the server's Key Vault credential) or UserAssigned with one identity that reads the secrets", t)}
	}
	if len(o.V.UserAssignedIdentities) != 1 {
		return "", &rules.Error{Code: rules.CodeInvalidIdentity, Message: "identity.userAssignedIdentities must hold exactly one user-assigned identity resource ID: the identity that reads the credential set's secrets"}
	}
	for id := range o.V.UserAssignedIdentities {
		return id, nil
	}
	return "", nil
}

// credentialSetName reads a credentialSetResourceId, which must name a
// credential set of registry reg on this server ("" = none).
func (h *Handler) credentialSetName(reg, id string) (string, error) {
	if id == "" {
		return "", nil
	}
	seg := strings.Split(strings.Trim(id, "/"), "/")
	if len(seg) == 10 && eq(seg[0], "subscriptions") && eq(seg[1], h.opts.SubscriptionID) && eq(seg[2], "resourceGroups") &&
		eq(seg[3], h.opts.ResourceGroup) && eq(seg[4], "providers") && eq(seg[5], "Microsoft.ContainerRegistry") &&
		eq(seg[6], "registries") && eq(seg[7], reg) && eq(seg[8], "credentialSets") && strings.HasPrefix(id, "/") {
		if err := rules.ValidateName("credential set", seg[9]); err != nil {
			return "", err
		}
		return seg[9], nil
	}
	return "", &rules.Error{Code: rules.CodeInvalidCredentialSetID, Message: fmt.Sprintf(
		"credentialSetResourceId %q must be the ID of a credential set of this registry: %s/credentialSets/<name>", id, h.registryID(reg))}
}

// ---- credential set bodies (PUT CredentialSet, PATCH CredentialSetUpdateParameters) ----

type credentialSetBody struct {
	Identity   opt[identityJSON]           `json:"identity"`
	Properties opt[credentialSetBodyProps] `json:"properties"`
}

type credentialSetBodyProps struct {
	LoginServer     opt[string]                `json:"loginServer"`
	AuthCredentials opt[[]authCredentialInput] `json:"authCredentials"`
}

type authCredentialInput struct {
	Name                     string `json:"name"`
	Type                     string `json:"type"`
	UsernameSecretIdentifier string `json:"usernameSecretIdentifier"`
	PasswordSecretIdentifier string `json:"passwordSecretIdentifier"`
}

// applyCredentialSet applies body to c (PUT: everything; PATCH: what was
// sent, and an omitted secret identifier keeps its value).
func applyCredentialSet(c *rules.CredentialSet, body credentialSetBody, patch bool) error {
	if !patch || body.Identity.Set {
		id, err := credentialSetIdentity(body.Identity)
		if err != nil {
			return err
		}
		c.Identity = id
	}
	p := body.Properties.V
	if p.LoginServer.Set {
		if patch && !strings.EqualFold(p.LoginServer.V, c.LoginServer) {
			return &rules.Error{Code: rules.CodePropertyChange, Message: "loginServer cannot be updated with PATCH: create the credential set again (PUT) or create another one"}
		}
		c.LoginServer = p.LoginServer.V
	} else if !patch {
		c.LoginServer = ""
	}
	if !p.AuthCredentials.Set {
		if !patch {
			return &rules.Error{Code: rules.CodeInvalidAuthCredentials, Message: "properties.authCredentials is required: one credential named Credential1 with usernameSecretIdentifier and passwordSecretIdentifier"}
		}
		return nil
	}
	creds := p.AuthCredentials.V
	if len(creds) != 1 {
		return &rules.Error{Code: rules.CodeInvalidAuthCredentials, Message: fmt.Sprintf("properties.authCredentials must hold exactly one credential (Credential1), not %d", len(creds))}
	}
	in := creds[0]
	if in.Name != "" && !strings.EqualFold(in.Name, rules.CredentialName) {
		return &rules.Error{Code: rules.CodeInvalidAuthCredentials, Message: fmt.Sprintf("authCredentials[0].name %q is invalid: the only credential name is Credential1", in.Name)}
	}
	if in.Type != "" && !strings.EqualFold(in.Type, "KeyVaultSecrets") {
		return &rules.Error{Code: rules.CodeInvalidAuthCredentials, Message: fmt.Sprintf("authCredentials[0].type %q is invalid: the only credential type is KeyVaultSecrets (secret references)", in.Type)}
	}
	if !patch || in.UsernameSecretIdentifier != "" {
		c.UsernameRef = in.UsernameSecretIdentifier
	}
	if !patch || in.PasswordSecretIdentifier != "" {
		c.PasswordRef = in.PasswordSecretIdentifier
	}
	return nil
}
