package auth

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/arcacache/arca/internal/metadata"
)

// Role is a built-in Azure role arca enforces on the data plane. ACR
// honours the Acr* roles only in legacy mode (LegacyRegistryPermissions)
// and the Container Registry Repository roles only in ABAC mode
// (AbacRepositoryPermissions).
type Role struct {
	Name    string
	GUID    string // the role definition's id in Azure
	ABAC    bool
	Actions []Action
}

// Roles are the assignable roles (GUIDs from Azure's built-in roles).
var Roles = []Role{
	{"AcrPull", "7f951dda-4ed3-4680-a7ca-43fe172d538d", false, []Action{Pull, MetadataRead}},
	{"AcrPush", "8311e382-0749-4cb8-b61a-304f252e45ec", false, []Action{Pull, MetadataRead, Push, MetadataWrite}},
	{"AcrDelete", "c2f4ef07-c644-48eb-af81-4b1b4947fb11", false, []Action{Delete}},
	{"Container Registry Repository Reader", "b93aa761-3e63-49ed-ac28-beffa264f7ac", true, []Action{Pull, MetadataRead}},
	{"Container Registry Repository Writer", "2a1e307c-b015-4ebd-883e-5b7698a07328", true, []Action{Pull, MetadataRead, Push, MetadataWrite}},
	{"Container Registry Repository Contributor", "2efddaa5-3f1f-4df3-97df-af3f13818f4c", true, AllActions},
}

// LookupRole finds a role by name or GUID (ignoring case), or by a role
// definition id ending in its GUID.
func LookupRole(s string) (Role, bool) {
	if i := strings.LastIndex(s, "/"); i >= 0 {
		s = s[i+1:]
	}
	for _, r := range Roles {
		if strings.EqualFold(r.Name, s) || strings.EqualFold(r.GUID, s) {
			return r, true
		}
	}
	return Role{}, false
}

// Registry role-assignment modes.
const (
	ModeLegacy = "LegacyRegistryPermissions"
	ModeABAC   = "AbacRepositoryPermissions"
)

// RoleScope is where a role assignment applies: ARM scopes contain the
// resources below them, so a subscription or resource group covers every
// registry in it.
type RoleScope struct {
	ResourceGroup string // "" = every group of the subscription
	Registry      string // lower case; "" = every registry in scope
	Repository    string // a repository pattern (name, prefix/*, *); "" = the whole registry
}

// ParseRoleScope parses an ARM scope in subscription sub:
// /subscriptions/{sub}[/resourceGroups/{rg}[/providers/Microsoft.ContainerRegistry/registries/{r}[/repositories/{repo}]]],
// where repo is a repository name, name/* or * as in scope maps.
func ParseRoleScope(scope, sub string) (RoleScope, error) {
	var rs RoleScope
	bad := func(why string) (RoleScope, error) {
		return RoleScope{}, fmt.Errorf("scope %q: %s", scope, why)
	}
	seg := strings.Split(strings.TrimPrefix(scope, "/"), "/")
	if len(seg) < 2 || !strings.EqualFold(seg[0], "subscriptions") || seg[1] == "" {
		return bad("want /subscriptions/{id}[/resourceGroups/{group}[/providers/Microsoft.ContainerRegistry/registries/{name}[/repositories/{repository}]]]")
	}
	if !strings.EqualFold(seg[1], sub) {
		return bad("subscription " + seg[1] + " is not this deployment's (" + sub + ")")
	}
	seg = seg[2:]
	if len(seg) == 0 {
		return rs, nil
	}
	if len(seg) < 2 || !strings.EqualFold(seg[0], "resourceGroups") || seg[1] == "" {
		return bad("want resourceGroups/{group} after the subscription")
	}
	rs.ResourceGroup, seg = seg[1], seg[2:]
	if len(seg) == 0 {
		return rs, nil
	}
	if len(seg) < 4 || !strings.EqualFold(seg[0], "providers") || !strings.EqualFold(seg[1], "Microsoft.ContainerRegistry") ||
		!strings.EqualFold(seg[2], "registries") || seg[3] == "" {
		return bad("want providers/Microsoft.ContainerRegistry/registries/{name} after the resource group")
	}
	rs.Registry, seg = strings.ToLower(seg[3]), seg[4:]
	if len(seg) == 0 {
		return rs, nil
	}
	if len(seg) < 2 || !strings.EqualFold(seg[0], "repositories") {
		return bad("want repositories/{repository} after the registry")
	}
	repo := strings.ToLower(strings.Join(seg[1:], "/"))
	if err := ValidRepositoryPattern(repo); err != nil {
		return bad(err.Error())
	}
	rs.Repository = repo
	return rs, nil
}

// ValidateRoleAssignment checks a role and scope before an assignment is
// stored: the Acr* roles apply to whole registries.
func ValidateRoleAssignment(role, scope, sub string) (Role, RoleScope, error) {
	r, ok := LookupRole(role)
	if !ok {
		names := make([]string, len(Roles))
		for i, r := range Roles {
			names[i] = r.Name
		}
		return Role{}, RoleScope{}, fmt.Errorf("role %q: want one of %s", role, strings.Join(names, ", "))
	}
	rs, err := ParseRoleScope(scope, sub)
	if err != nil {
		return Role{}, RoleScope{}, err
	}
	if rs.Repository != "" && !r.ABAC {
		return Role{}, RoleScope{}, fmt.Errorf("role %s applies to whole registries; a repository scope needs a Container Registry Repository role", r.Name)
	}
	return r, rs, nil
}

// IdentityStore is what identity authentication reads.
type IdentityStore interface {
	GetIdentity(ctx context.Context, rg, name string) (metadata.UserIdentity, error)
	GetIdentityByPrincipal(ctx context.Context, principalID string) (metadata.UserIdentity, error)
	GetIdentityByClientID(ctx context.Context, clientID string) (metadata.UserIdentity, error)
	RoleAssignmentsOf(ctx context.Context, principalID string) ([]metadata.RoleAssignment, error)
	FederatedCredentialsByIssuer(ctx context.Context, issuer string) ([]metadata.FederatedCredential, error)
}

func (s *Service) identityOf(ctx context.Context, f metadata.FederatedCredential) (metadata.UserIdentity, error) {
	return s.identities.GetIdentity(ctx, f.ResourceGroup, f.Identity)
}

// identityPerms is what an identity's role assignments grant on registry
// (in the deployment's resource group) under the registry's role-assignment mode; ok is
// false when the identity no longer exists.
func (s *Service) identityPerms(ctx context.Context, registry, principalID string) (Perms, bool, error) {
	if s.identities == nil {
		return nil, false, nil
	}
	if _, err := s.identities.GetIdentityByPrincipal(ctx, principalID); errors.Is(err, metadata.ErrNotFound) {
		return nil, false, nil
	} else if err != nil {
		return nil, false, err
	}
	set, err := s.store.GetRegistrySettings(ctx, registry)
	if err != nil && !errors.Is(err, metadata.ErrNotFound) {
		return nil, false, err
	}
	abac := set.RoleAssignmentMode == ModeABAC
	list, err := s.identities.RoleAssignmentsOf(ctx, principalID)
	if err != nil {
		return nil, false, err
	}
	perms := Perms{}
	for _, a := range list {
		role, ok := LookupRole(a.Role)
		if !ok || role.ABAC != abac {
			continue
		}
		rs, err := ParseRoleScope(a.Scope, s.subscription)
		if err != nil {
			continue // another deployment's scope
		}
		if (rs.ResourceGroup != "" && !strings.EqualFold(rs.ResourceGroup, s.resourceGroup)) || (rs.Registry != "" && rs.Registry != registry) {
			continue
		}
		pattern := rs.Repository
		if pattern == "" {
			pattern = "*"
		}
		var cond *Condition
		if a.Condition != "" {
			// Checked when the assignment was made; one that no longer
			// parses grants nothing rather than everything.
			if cond, err = ParseCondition(a.Condition); err != nil {
				continue
			}
		}
		perms = append(perms, Rule{Pattern: pattern, Actions: role.Actions, Cond: cond})
	}
	return perms, true, nil
}
