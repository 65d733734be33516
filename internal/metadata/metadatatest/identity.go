package metadatatest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/arcacache/arca/internal/metadata"
	"github.com/arcacache/arca/internal/rules"
)

// Identities, federated credentials and role assignments: names ignore
// case, ids never change on update, deleting an identity takes its
// federated credentials, a duplicate role assignment returns the first.
func testIdentities(t *testing.T, open Opener) {
	ctx := context.Background()
	s := open(t)
	u, created, err := s.PutIdentity(ctx, metadata.UserIdentity{ResourceGroup: "MyRG", Name: "CacheId", PrincipalID: "AAAAAAAA-0000-4000-8000-000000000001",
		ClientID: "aaaaaaaa-0000-4000-8000-000000000002", TenantID: "t", Location: "local", Tags: map[string]string{"a": "b"}})
	if err != nil || !created || u.PrincipalID != "aaaaaaaa-0000-4000-8000-000000000001" || u.Name != "CacheId" || u.Tags["a"] != "b" {
		t.Fatalf("put identity: %+v %v %v", u, created, err)
	}
	again, created, err := s.PutIdentity(ctx, metadata.UserIdentity{ResourceGroup: "myrg", Name: "cacheid", PrincipalID: "other", ClientID: "other2", Location: "west"})
	if err != nil || created || again.PrincipalID != u.PrincipalID || again.Location != "west" {
		t.Fatalf("update identity: %+v %v %v", again, created, err)
	}
	if got, err := s.GetIdentityByPrincipal(ctx, "AAAAAAAA-0000-4000-8000-000000000001"); err != nil || got.Name != "CacheId" {
		t.Fatalf("by principal: %+v %v", got, err)
	}
	if list, err := s.ListIdentities(ctx, "MYRG"); err != nil || len(list) != 1 {
		t.Fatalf("list: %v %v", list, err)
	}
	if list, err := s.ListIdentities(ctx, ""); err != nil || len(list) != 1 {
		t.Fatalf("list all: %v %v", list, err)
	}
	fic := metadata.FederatedCredential{ResourceGroup: "myrg", Identity: "CACHEID", Name: "Ci", Issuer: "https://iss", Subject: "s", Audiences: []string{"a"}}
	if created, err := s.PutFederatedCredential(ctx, fic); err != nil || !created {
		t.Fatalf("put fic: %v %v", created, err)
	}
	if _, err := s.PutFederatedCredential(ctx, metadata.FederatedCredential{ResourceGroup: "myrg", Identity: "nobody", Name: "x", Issuer: "https://iss", Subject: "s", Audiences: []string{"a"}}); !errors.Is(err, metadata.ErrNotFound) {
		t.Fatalf("fic of a missing identity: %v", err)
	}
	got, err := s.FederatedCredentialsByIssuer(ctx, "https://iss")
	if err != nil || len(got) != 1 || got[0].Identity != "CacheId" || got[0].ResourceGroup != "MyRG" || got[0].Audiences[0] != "a" {
		t.Fatalf("by issuer: %+v %v", got, err)
	}
	a := metadata.RoleAssignment{Name: "BBBBBBBB-0000-4000-8000-000000000001", Role: "AcrPull", PrincipalID: u.PrincipalID, Scope: "/subscriptions/s/resourceGroups/arca"}
	if out, created, err := s.PutRoleAssignment(ctx, a); err != nil || !created || out.Name != "bbbbbbbb-0000-4000-8000-000000000001" {
		t.Fatalf("put role assignment: %+v %v %v", out, created, err)
	}
	a2 := a
	a2.Name, a2.Scope = "bbbbbbbb-0000-4000-8000-000000000002", "/SUBSCRIPTIONS/s/resourcegroups/ARCA"
	if out, created, err := s.PutRoleAssignment(ctx, a2); err != nil || created || out.Name != "bbbbbbbb-0000-4000-8000-000000000001" {
		t.Fatalf("duplicate role assignment: %+v %v %v", out, created, err)
	}
	if list, err := s.RoleAssignmentsOf(ctx, u.PrincipalID); err != nil || len(list) != 1 {
		t.Fatalf("assignments of: %v %v", list, err)
	}
	if err := s.DeleteIdentity(ctx, "MYRG", "CACHEID"); err != nil {
		t.Fatal(err)
	}
	if got, err := s.FederatedCredentialsByIssuer(ctx, "https://iss"); err != nil || len(got) != 0 {
		t.Fatalf("fics after identity delete: %v %v", got, err)
	}
	if err := s.DeleteIdentity(ctx, "myrg", "cacheid"); !errors.Is(err, metadata.ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	if err := s.DeleteRoleAssignment(ctx, "BBBBBBBB-0000-4000-8000-000000000001"); err != nil {
		t.Fatal(err)
	}
	if list, err := s.ListRoleAssignments(ctx); err != nil || len(list) != 0 {
		t.Fatalf("assignments after delete: %v %v", list, err)
	}
}

// A credential set keeps the user-assigned identity it reads its secrets
// as; a rewrite changes it, and a health check made as the previous
// identity does not overwrite the health of the new one.
func testCredentialSetIdentity(t *testing.T, open Opener) {
	ctx := context.Background()
	s := open(t)
	const uami = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/KVReader"
	cs := rules.CredentialSet{Name: "Hub", LoginServer: "docker.io", UsernameRef: "u", PasswordRef: "p", PrincipalID: "x",
		Identity: uami, ProvisioningState: rules.StateSucceeded}
	put := func(c rules.CredentialSet) {
		t.Helper()
		if err := s.UpdateRules(ctx, "default", func(tx metadata.RulesTx) error { return tx.PutCredentialSet(c) }); err != nil {
			t.Fatal(err)
		}
	}
	put(cs)
	if got, err := s.GetCredentialSet(ctx, "default", "hub"); err != nil || got.Identity != uami {
		t.Fatalf("identity round trip: %q, %v", got.Identity, err)
	}
	system := cs
	system.Identity = ""
	put(system)
	sets, _, err := s.ListCredentialSetsPage(ctx, "default", "", 0)
	if err != nil || len(sets) != 1 || sets[0].Identity != "" {
		t.Fatalf("after the switch to system-assigned: %+v, %v", sets, err)
	}
	if stored, _ := s.SetCredentialSetHealth(ctx, "default", cs, rules.Health{Status: rules.Healthy}); stored {
		t.Fatal("a check made as the previous identity stored its health")
	}
	if stored, err := s.SetCredentialSetHealth(ctx, "default", system, rules.Health{Status: rules.Healthy}); err != nil || !stored {
		t.Fatalf("a check as the current identity: %v %v", stored, err)
	}
}

// A role assignment keeps its ABAC condition and version.
func testRoleAssignmentCondition(t *testing.T, open Opener) {
	ctx := context.Background()
	s := open(t)
	const cond = "@Request[Microsoft.ContainerRegistry/registries/repositories:name] StringStartsWithIgnoreCase 'team-a/'"
	a := metadata.RoleAssignment{Name: "cccccccc-0000-4000-8000-000000000001", Role: "Container Registry Repository Reader",
		PrincipalID: "p-1", Scope: "/subscriptions/s/resourceGroups/rg", Condition: cond, ConditionVersion: "2.0"}
	if _, created, err := s.PutRoleAssignment(ctx, a); err != nil || !created {
		t.Fatalf("put: %v %v", created, err)
	}
	got, err := s.GetRoleAssignment(ctx, a.Name)
	if err != nil || got.Condition != cond || got.ConditionVersion != "2.0" {
		t.Fatalf("get: %+v %v", got, err)
	}
	list, err := s.RoleAssignmentsOf(ctx, "P-1")
	if err != nil || len(list) != 1 || list[0].Condition != cond {
		t.Fatalf("of principal: %+v %v", list, err)
	}
}

// An identity's client secret hash is set with its creation and expiry
// times, found by client id, replaced and removed; a PUT of the identity
// keeps it.
func testIdentitySecret(t *testing.T, open Opener) {
	ctx := context.Background()
	s := open(t)
	u, _, err := s.PutIdentity(ctx, metadata.UserIdentity{ResourceGroup: "RG", Name: "sp1", PrincipalID: "dddddddd-0000-4000-8000-000000000001",
		ClientID: "DDDDDDDD-0000-4000-8000-000000000002", TenantID: "t", Location: "l"})
	if err != nil || u.SecretHash != "" || !u.SecretCreated.IsZero() {
		t.Fatalf("new identity: %+v %v", u, err)
	}
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	ends := at.AddDate(1, 0, 0)
	if err := s.SetIdentitySecret(ctx, "rg", "SP1", "$argon2id$h1", at, ends); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.PutIdentity(ctx, metadata.UserIdentity{ResourceGroup: "rg", Name: "sp1", Location: "elsewhere"}); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetIdentityByClientID(ctx, "dddddddd-0000-4000-8000-000000000002")
	if err != nil || got.Name != "sp1" || got.SecretHash != "$argon2id$h1" || !got.SecretCreated.Equal(at) || !got.SecretExpires.Equal(ends) || got.Location != "elsewhere" {
		t.Fatalf("by client id: %+v %v", got, err)
	}
	// A secret without an end (zero) replaces one with an end.
	if err := s.SetIdentitySecret(ctx, "rg", "sp1", "$argon2id$h2", at, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetIdentity(ctx, "rg", "sp1"); got.SecretHash != "$argon2id$h2" || !got.SecretExpires.IsZero() {
		t.Fatalf("replaced without an end: %+v", got)
	}
	if err := s.SetIdentitySecret(ctx, "rg", "sp1", "", at, ends); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetIdentity(ctx, "rg", "sp1"); got.SecretHash != "" || !got.SecretCreated.IsZero() || !got.SecretExpires.IsZero() {
		t.Fatalf("removed: %+v", got)
	}
	if err := s.SetIdentitySecret(ctx, "rg", "nobody", "h", at, ends); !errors.Is(err, metadata.ErrNotFound) {
		t.Fatalf("secret of a missing identity: %v", err)
	}
	if _, err := s.GetIdentityByClientID(ctx, "eeeeeeee-0000-4000-8000-000000000000"); !errors.Is(err, metadata.ErrNotFound) {
		t.Fatalf("unknown client id: %v", err)
	}
}
