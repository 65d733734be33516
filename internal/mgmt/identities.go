package mgmt

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/arcacache/arca/internal/armtime"
	"github.com/arcacache/arca/internal/auth"
	"github.com/arcacache/arca/internal/metadata"
)

// IdentityStore keeps user-assigned identities, their federated
// credentials and role assignments.
type IdentityStore interface {
	GetIdentity(ctx context.Context, rg, name string) (metadata.UserIdentity, error)
	GetIdentityByPrincipal(ctx context.Context, principalID string) (metadata.UserIdentity, error)
	ListIdentities(ctx context.Context, rg string) ([]metadata.UserIdentity, error)
	PutIdentity(ctx context.Context, u metadata.UserIdentity) (metadata.UserIdentity, bool, error)
	DeleteIdentity(ctx context.Context, rg, name string) error
	SetIdentitySecret(ctx context.Context, rg, name, hash string, at, expires time.Time) error
	GetFederatedCredential(ctx context.Context, rg, identity, name string) (metadata.FederatedCredential, error)
	ListFederatedCredentials(ctx context.Context, rg, identity string) ([]metadata.FederatedCredential, error)
	PutFederatedCredential(ctx context.Context, f metadata.FederatedCredential) (bool, error)
	DeleteFederatedCredential(ctx context.Context, rg, identity, name string) error
	ListRoleAssignments(ctx context.Context) ([]metadata.RoleAssignment, error)
	GetRoleAssignment(ctx context.Context, name string) (metadata.RoleAssignment, error)
	PutRoleAssignment(ctx context.Context, a metadata.RoleAssignment) (metadata.RoleAssignment, bool, error)
	DeleteRoleAssignment(ctx context.Context, name string) error
}

// ARM names of the identity and authorization providers.
const (
	identityType       = "Microsoft.ManagedIdentity/userAssignedIdentities"
	ficType            = identityType + "/federatedIdentityCredentials"
	roleAssignmentType = "Microsoft.Authorization/roleAssignments"
	defaultFICAudience = "api://AzureADTokenExchange"
	maxFICsPerIdentity = 20 // Azure's limit
)

var (
	// Azure: 3-128 characters, letters, digits, '-' and '_', starting
	// with a letter or digit.
	identityNameRe = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_-]{2,127}$`)
	ficNameRe      = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_-]{2,119}$`)
	rgNameRe       = regexp.MustCompile(`^[-\w._()]{1,90}$`)
)

// identityRequest is a parsed call under Microsoft.ManagedIdentity.
type identityRequest struct {
	rg, name, fic string
	fics          bool // the federatedIdentityCredentials collection or one of it
	resetSecret   bool // POST …/{n}/resetCredential (arca extension)
}

// route names ir's route (routes.go).
func (ir identityRequest) route() string {
	switch {
	case ir.resetSecret:
		return routeResetCredential
	case ir.fic != "":
		return routeFIC
	case ir.fics:
		return routeFICs
	case ir.name != "":
		return routeIdentity
	}
	return routeIdentities
}

// parseIdentity parses /subscriptions/{s}/resourceGroups/{rg}/providers/
// Microsoft.ManagedIdentity/userAssignedIdentities[/{n}[/federatedIdentityCredentials[/{fic}]]]
// (seg starts after the subscription id); ok is false for other paths.
// Identities live in any resource group, as in Azure.
func parseIdentity(seg []string) (identityRequest, bool) {
	var ir identityRequest
	if len(seg) < 4 || !eq(seg[0], "resourceGroups") || !eq(seg[2], "providers") || !eq(seg[3], "Microsoft.ManagedIdentity") {
		return ir, false
	}
	ir.rg, seg = seg[1], seg[4:]
	if len(seg) == 0 || !eq(seg[0], "userAssignedIdentities") || len(seg) > 4 {
		return ir, false
	}
	if len(seg) >= 2 {
		ir.name = seg[1]
	}
	if len(seg) == 3 && eq(seg[2], "resetCredential") {
		ir.resetSecret = true
		return ir, true
	}
	if len(seg) >= 3 {
		if !eq(seg[2], "federatedIdentityCredentials") {
			return ir, false
		}
		ir.fics = true
	}
	if len(seg) == 4 {
		ir.fic = seg[3]
	}
	return ir, true
}

func (h *Handler) identityStore() (IdentityStore, error) {
	if h.opts.Identities == nil {
		return nil, &apiError{Status: http.StatusNotImplemented, Code: "NotImplemented", Message: "This server keeps no identities."}
	}
	return h.opts.Identities, nil
}

func (h *Handler) identityID(rg, name string) string {
	return "/subscriptions/" + h.opts.SubscriptionID + "/resourceGroups/" + rg + "/providers/" + identityType + "/" + name
}

func (h *Handler) identityJSON(u metadata.UserIdentity) map[string]any {
	tags := u.Tags
	if tags == nil {
		tags = map[string]string{}
	}
	props := map[string]any{"principalId": u.PrincipalID, "clientId": u.ClientID, "tenantId": u.TenantID}
	if !u.SecretCreated.IsZero() {
		// arca extension: when the client secret was set (never the secret).
		props["clientSecretCreatedDateTime"] = armtime.Format(u.SecretCreated)
		if !u.SecretExpires.IsZero() {
			props["clientSecretEndDateTime"] = armtime.Format(u.SecretExpires)
		}
	}
	return map[string]any{"id": h.identityID(u.ResourceGroup, u.Name), "name": u.Name, "type": identityType,
		"location": u.Location, "tags": tags, "properties": props}
}

func (h *Handler) ficJSON(f metadata.FederatedCredential) map[string]any {
	return map[string]any{"id": h.identityID(f.ResourceGroup, f.Identity) + "/federatedIdentityCredentials/" + f.Name,
		"name": f.Name, "type": ficType,
		"properties": map[string]any{"issuer": f.Issuer, "subject": f.Subject, "audiences": f.Audiences}}
}

func errIdentityNotFound(ir identityRequest) error {
	return errNotFound("ResourceNotFound", "The Resource '"+identityType+"/"+ir.name+"' under resource group '"+ir.rg+"' was not found.")
}

// identities serves the Microsoft.ManagedIdentity paths.
func (h *Handler) identities(w http.ResponseWriter, req *request) error {
	r, ir := req.r, req.ident
	st, err := h.identityStore()
	if err != nil {
		return err
	}
	if !rgNameRe.MatchString(ir.rg) {
		return errBadRequest("InvalidResourceGroupName", "Resource group names are 1-90 letters, digits, '.', '_', '-', '(' and ')'.")
	}
	if ir.fics {
		return h.federatedCredentials(w, r, st, ir)
	}
	if ir.resetSecret {
		return h.resetIdentitySecret(w, r, st, ir)
	}
	ctx := r.Context()
	if ir.name == "" {
		if r.Method != http.MethodGet {
			return errMethod(r)
		}
		list, err := st.ListIdentities(ctx, ir.rg)
		if err != nil {
			return err
		}
		out := make([]map[string]any, 0, len(list))
		for _, u := range list {
			out = append(out, h.identityJSON(u))
		}
		writeJSON(w, http.StatusOK, map[string]any{"value": out})
		return nil
	}
	if !identityNameRe.MatchString(ir.name) {
		return errBadRequest("InvalidResourceName", "Identity names are 3-128 letters, digits, '-' and '_', starting with a letter or digit.")
	}
	switch r.Method {
	case http.MethodGet:
		u, err := st.GetIdentity(ctx, ir.rg, ir.name)
		if errors.Is(err, metadata.ErrNotFound) {
			return errIdentityNotFound(ir)
		}
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, h.identityJSON(u))
		return nil
	case http.MethodPut, http.MethodPatch:
		var body struct {
			Location string            `json:"location"`
			Tags     map[string]string `json:"tags"`
		}
		if err := readBody(r, &body); err != nil {
			return err
		}
		if body.Location == "" {
			body.Location = h.opts.Location
		}
		u, created, err := st.PutIdentity(ctx, metadata.UserIdentity{ResourceGroup: ir.rg, Name: ir.name, PrincipalID: uuid.NewString(),
			ClientID: uuid.NewString(), TenantID: h.opts.TenantID, Location: body.Location, Tags: body.Tags})
		if err != nil {
			return err
		}
		status := http.StatusOK
		if created {
			status = http.StatusCreated
			h.log.Info("identity created", "resource_group", ir.rg, "name", ir.name, "principal_id", u.PrincipalID)
		}
		writeJSON(w, status, h.identityJSON(u))
		return nil
	case http.MethodDelete:
		return writeDeleted(w, st.DeleteIdentity(ctx, ir.rg, ir.name), func() error {
			h.log.Info("identity deleted", "resource_group", ir.rg, "name", ir.name)
			return nil
		})
	}
	return errMethod(r)
}

// defaultSecretLifetime is how long a reset client secret lasts when the
// request names no end: one year, az ad sp credential reset's --years
// default.
const defaultSecretLifetime = 1

// resetIdentitySecret serves POST …/userAssignedIdentities/{n}/resetCredential:
// a new client secret, shown in this answer only (the store keeps its
// argon2id hash); the previous secret and what was signed in with it stop
// working. With the client id as user name it logs in as the identity
// (docker login, a credential set of a downstream), as a service
// principal does at ACR, until its end: the body's endDateTime (as
// Microsoft Graph's passwordCredential), else a year from now.
func (h *Handler) resetIdentitySecret(w http.ResponseWriter, r *http.Request, st IdentityStore, ir identityRequest) error {
	if r.Method != http.MethodPost {
		return errMethod(r)
	}
	now := h.opts.Now().UTC()
	end := now.AddDate(defaultSecretLifetime, 0, 0)
	if r.ContentLength != 0 {
		var body struct {
			EndDateTime *time.Time `json:"endDateTime"`
		}
		if err := readBody(r, &body); err != nil {
			return err
		}
		if body.EndDateTime != nil {
			end = body.EndDateTime.UTC()
		}
		if !end.After(now) {
			return errBadRequest("InvalidCredentialEndDate", fmt.Sprintf("endDateTime %s is not in the future.", armtime.Format(end)))
		}
	}
	ctx := r.Context()
	u, err := st.GetIdentity(ctx, ir.rg, ir.name)
	if errors.Is(err, metadata.ErrNotFound) {
		return errIdentityNotFound(ir)
	}
	if err != nil {
		return err
	}
	secret, err := auth.GenerateSecret()
	if err != nil {
		return err
	}
	hash, err := auth.HashPassword(secret)
	if err != nil {
		return err
	}
	if err := st.SetIdentitySecret(ctx, ir.rg, ir.name, hash, now, end); err != nil {
		return err
	}
	h.log.Info("identity client secret reset", "resource_group", ir.rg, "name", ir.name, "client_id", u.ClientID, "ends", end)
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, map[string]any{"clientId": u.ClientID, "clientSecret": secret, "tenantId": u.TenantID,
		"createdDateTime": armtime.Format(now), "endDateTime": armtime.Format(end)})
	return nil
}

func (h *Handler) federatedCredentials(w http.ResponseWriter, r *http.Request, st IdentityStore, ir identityRequest) error {
	ctx := r.Context()
	if _, err := st.GetIdentity(ctx, ir.rg, ir.name); errors.Is(err, metadata.ErrNotFound) {
		return errIdentityNotFound(ir)
	} else if err != nil {
		return err
	}
	if ir.fic == "" {
		if r.Method != http.MethodGet {
			return errMethod(r)
		}
		list, err := st.ListFederatedCredentials(ctx, ir.rg, ir.name)
		if err != nil {
			return err
		}
		out := make([]map[string]any, 0, len(list))
		for _, f := range list {
			out = append(out, h.ficJSON(f))
		}
		writeJSON(w, http.StatusOK, map[string]any{"value": out})
		return nil
	}
	if !ficNameRe.MatchString(ir.fic) {
		return errBadRequest("InvalidResourceName", "Federated identity credential names are 3-120 letters, digits, '-' and '_', starting with a letter or digit.")
	}
	switch r.Method {
	case http.MethodGet:
		f, err := st.GetFederatedCredential(ctx, ir.rg, ir.name, ir.fic)
		if errors.Is(err, metadata.ErrNotFound) {
			return errNotFound("ResourceNotFound", "The federated identity credential '"+ir.fic+"' was not found.")
		}
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, h.ficJSON(f))
		return nil
	case http.MethodPut:
		var body struct {
			Properties struct {
				Issuer    string   `json:"issuer"`
				Subject   string   `json:"subject"`
				Audiences []string `json:"audiences"`
			} `json:"properties"`
		}
		if err := readBody(r, &body); err != nil {
			return err
		}
		f := metadata.FederatedCredential{ResourceGroup: ir.rg, Identity: ir.name, Name: ir.fic,
			Issuer: body.Properties.Issuer, Subject: body.Properties.Subject, Audiences: body.Properties.Audiences}
		if err := validateFIC(&f); err != nil {
			return err
		}
		list, err := st.ListFederatedCredentials(ctx, ir.rg, ir.name)
		if err != nil {
			return err
		}
		if len(list) >= maxFICsPerIdentity && !slices.ContainsFunc(list, func(o metadata.FederatedCredential) bool { return eq(o.Name, f.Name) }) {
			return errBadRequest("BadRequest", "An identity has at most 20 federated identity credentials.")
		}
		created, err := st.PutFederatedCredential(ctx, f)
		if errors.Is(err, metadata.ErrNotFound) {
			return errIdentityNotFound(ir)
		}
		if err != nil {
			return err
		}
		f, err = st.GetFederatedCredential(ctx, ir.rg, ir.name, ir.fic)
		if err != nil {
			return err
		}
		h.log.Info("federated credential stored", "identity", ir.name, "name", ir.fic, "issuer", f.Issuer, "subject", f.Subject)
		writeJSON(w, writtenStatus(created), h.ficJSON(f))
		return nil
	case http.MethodDelete:
		return writeDeleted(w, st.DeleteFederatedCredential(ctx, ir.rg, ir.name, ir.fic), nil)
	}
	return errMethod(r)
}

// validateFIC checks and normalizes a federated credential: a valid
// issuer (https, or http on loopback), a subject, audiences (default
// api://AzureADTokenExchange, as az).
func validateFIC(f *metadata.FederatedCredential) error {
	if err := auth.ValidIssuer(f.Issuer); err != nil {
		return errBadRequest("BadRequest", "Invalid issuer: "+err.Error())
	}
	if strings.TrimSpace(f.Subject) == "" || len(f.Subject) > 600 {
		return errBadRequest("BadRequest", "A federated identity credential needs a subject of at most 600 characters.")
	}
	var aud []string
	for _, a := range f.Audiences {
		if a = strings.TrimSpace(a); a != "" {
			aud = append(aud, a)
		}
	}
	if len(aud) == 0 {
		aud = []string{defaultFICAudience}
	}
	if len(aud) > 1 {
		return errBadRequest("BadRequest", "A federated identity credential has exactly one audience.")
	}
	f.Audiences = aud
	return nil
}

// parseRoleAssignment finds {scope}/providers/Microsoft.Authorization/
// roleAssignments[/{name}] in a path (seg is the whole path).
func parseRoleAssignment(seg []string) (scope, name string, ok bool) {
	for i := 0; i+2 < len(seg); i++ {
		if eq(seg[i], "providers") && eq(seg[i+1], "Microsoft.Authorization") && eq(seg[i+2], "roleAssignments") {
			rest := seg[i+3:]
			if len(rest) > 1 {
				return "", "", false
			}
			if len(rest) == 1 {
				name = rest[0]
			}
			return "/" + strings.Join(seg[:i], "/"), name, true
		}
	}
	return "", "", false
}

func (h *Handler) roleDefinitionID(r auth.Role) string {
	return "/subscriptions/" + h.opts.SubscriptionID + "/providers/Microsoft.Authorization/roleDefinitions/" + r.GUID
}

func (h *Handler) roleAssignmentJSON(a metadata.RoleAssignment) map[string]any {
	role, _ := auth.LookupRole(a.Role)
	var cond, version any // null without a condition, as ARM
	if a.Condition != "" {
		cond, version = a.Condition, a.ConditionVersion
	}
	return map[string]any{"id": a.Scope + "/providers/" + roleAssignmentType + "/" + a.Name, "name": a.Name, "type": roleAssignmentType,
		"properties": map[string]any{"roleDefinitionId": h.roleDefinitionID(role), "principalId": a.PrincipalID,
			"principalType": "ServicePrincipal", "scope": a.Scope, "description": a.Description, "condition": cond,
			"conditionVersion": version, "createdOn": timeJSON(a.Created)}}
}

// roleAssignments serves role assignments: PUT and DELETE at
// {scope}/providers/Microsoft.Authorization/roleAssignments/{guid}, GET of
// one, and GET of the collection at any scope (the assignments at or
// below it; $filter=principalId eq '{id}' narrows it).
func (h *Handler) roleAssignments(w http.ResponseWriter, req *request) error {
	r, scope, name := req.r, req.scope, req.name
	st, err := h.identityStore()
	if err != nil {
		return err
	}
	ctx := r.Context()
	if name == "" {
		if r.Method != http.MethodGet {
			return errMethod(r)
		}
		principal := ""
		if f := r.URL.Query().Get("$filter"); f != "" {
			p, ok := parsePrincipalFilter(f)
			if !ok {
				return errBadRequest("InvalidFilter", "Only $filter=principalId eq '{id}' is supported.")
			}
			principal = p
		}
		list, err := st.ListRoleAssignments(ctx)
		if err != nil {
			return err
		}
		out := []map[string]any{}
		for _, a := range list {
			if (principal == "" || eq(a.PrincipalID, principal)) && scopeContains(scope, a.Scope) {
				out = append(out, h.roleAssignmentJSON(a))
			}
		}
		writeJSON(w, http.StatusOK, map[string]any{"value": out})
		return nil
	}
	if _, err := uuid.Parse(name); err != nil {
		return errBadRequest("InvalidRoleAssignmentId", "The role assignment ID '"+name+"' is not valid: it must be a GUID.")
	}
	name = strings.ToLower(name)
	switch r.Method {
	case http.MethodGet, http.MethodDelete:
		a, err := st.GetRoleAssignment(ctx, name)
		if errors.Is(err, metadata.ErrNotFound) || (err == nil && !strings.EqualFold(a.Scope, scope)) {
			if r.Method == http.MethodDelete {
				w.WriteHeader(http.StatusNoContent)
				return nil
			}
			return errNotFound("RoleAssignmentNotFound", "The role assignment '"+name+"' is not found.")
		}
		if err != nil {
			return err
		}
		if r.Method == http.MethodDelete {
			if err := st.DeleteRoleAssignment(ctx, name); err != nil && !errors.Is(err, metadata.ErrNotFound) {
				return err
			}
			h.log.Info("role assignment deleted", "name", name, "role", a.Role, "principal_id", a.PrincipalID, "scope", a.Scope)
		}
		writeJSON(w, http.StatusOK, h.roleAssignmentJSON(a))
		return nil
	case http.MethodPut:
		var body struct {
			Properties struct {
				RoleDefinitionID string `json:"roleDefinitionId"`
				PrincipalID      string `json:"principalId"`
				Description      string `json:"description"`
				Condition        string `json:"condition"`
				ConditionVersion string `json:"conditionVersion"`
			} `json:"properties"`
		}
		if err := readBody(r, &body); err != nil {
			return err
		}
		p := body.Properties
		role, _, err := auth.ValidateRoleAssignment(p.RoleDefinitionID, scope, h.opts.SubscriptionID)
		if err != nil {
			return errBadRequest("InvalidRoleAssignmentRequest", err.Error())
		}
		cond, err := auth.ValidateCondition(p.Condition, p.ConditionVersion)
		if err != nil {
			return errBadRequest("InvalidRoleAssignmentCondition", "The role assignment condition is not supported: "+err.Error()+".")
		}
		if cond != nil {
			if !role.ABAC {
				return errBadRequest("InvalidRoleAssignmentCondition", "Role "+role.Name+" takes no condition: conditions on repository names apply to the Container Registry Repository roles.")
			}
			p.ConditionVersion = auth.ConditionVersion
		} else {
			p.Condition = ""
		}
		if _, err := st.GetIdentityByPrincipal(ctx, p.PrincipalID); errors.Is(err, metadata.ErrNotFound) {
			return errBadRequest("PrincipalNotFound", "Principal "+p.PrincipalID+" does not exist in the directory "+h.opts.TenantID+".")
		} else if err != nil {
			return err
		}
		a, created, err := st.PutRoleAssignment(ctx, metadata.RoleAssignment{Name: name, Role: role.Name, PrincipalID: p.PrincipalID,
			Scope: canonicalScope(scope), Description: p.Description, Condition: p.Condition, ConditionVersion: p.ConditionVersion})
		if err != nil {
			return err
		}
		if !created {
			return &apiError{Status: http.StatusConflict, Code: "RoleAssignmentExists", Message: "The role assignment already exists (" + a.Name + ")."}
		}
		h.log.Info("role assignment created", "name", a.Name, "role", a.Role, "principal_id", a.PrincipalID, "scope", a.Scope,
			"conditioned", a.Condition != "")
		writeJSON(w, http.StatusCreated, h.roleAssignmentJSON(a))
		return nil
	}
	return errMethod(r)
}

// canonicalScope drops a trailing slash (ARM compares scopes ignoring case).
func canonicalScope(s string) string { return strings.TrimSuffix(s, "/") }

// scopeContains reports whether assignment scope inner is at or below outer.
func scopeContains(outer, inner string) bool {
	o, i := strings.ToLower(canonicalScope(outer)), strings.ToLower(canonicalScope(inner))
	return i == o || strings.HasPrefix(i, o+"/")
}

var principalFilterRe = regexp.MustCompile(`^\s*principalId\s+eq\s+'([0-9a-fA-F-]{36})'\s*$`)

func parsePrincipalFilter(f string) (string, bool) {
	m := principalFilterRe.FindStringSubmatch(f)
	if m == nil {
		return "", false
	}
	return m[1], true
}
