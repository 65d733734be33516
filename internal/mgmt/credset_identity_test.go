package mgmt

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/arcacache/arca/internal/rules"
)

// identityChecker records the identity each check reads the secrets as.
type identityChecker struct {
	mu   sync.Mutex
	seen []string
}

func (c *identityChecker) Check(_ context.Context, cs rules.CredentialSet) (string, string, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seen = append(c.seen, cs.Identity)
	return rules.Healthy, "", ""
}

func (c *identityChecker) last() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.seen[len(c.seen)-1]
}

// A credential set names the user-assigned identity that reads its Key
// Vault secrets (ARM's IdentityProperties); the check runs as it, and
// SystemAssigned switches back to the server's credential with the
// set's stable principal.
func TestCredentialSetIdentity(t *testing.T) {
	chk := &identityChecker{}
	f := newFixture(t, func(o *Options) { o.Checker = chk })
	p := base("default") + "/credentialSets/kvcreds"
	withIdentity := func(identity any) map[string]any {
		b := credSetBody("docker.io", "https://MyKeyvault.vault.azure.net/secrets/u", "https://MyKeyvault.vault.azure.net/secrets/p")
		b["identity"] = identity
		return b
	}
	system := f.do(http.MethodPut, p, credSetBody("docker.io", "env://U", "env://P"))
	mustStatus(t, "create", system, http.StatusCreated)
	principal := get(system.json(t), "identity.principalId")

	ua := map[string]any{"type": "UserAssigned", "userAssignedIdentities": map[string]any{uami: map[string]any{}}}
	mustStatus(t, "user-assigned", f.do(http.MethodPut, p, withIdentity(ua)), http.StatusOK)
	m := f.do(http.MethodGet, p, nil).json(t)
	ids, _ := get(m, "identity.userAssignedIdentities").(map[string]any)
	if get(m, "identity.type") != "userAssigned" || len(ids) != 1 || ids[uami] == nil || get(m, "identity.principalId") != nil {
		t.Fatalf("user-assigned identity shown as %v", m["identity"])
	}
	if chk.last() != uami {
		t.Fatalf("the check ran as %q, want %s", chk.last(), uami)
	}
	// A PATCH of the secrets keeps the identity; one of the identity changes it.
	mustStatus(t, "patch secrets", f.do(http.MethodPatch, p, map[string]any{"properties": map[string]any{"authCredentials": []any{
		map[string]any{"name": "Credential1", "passwordSecretIdentifier": "https://MyKeyvault.vault.azure.net/secrets/p2"}}}}), http.StatusCreated)
	if chk.last() != uami || get(f.do(http.MethodGet, p, nil).json(t), "identity.type") != "userAssigned" {
		t.Fatalf("a PATCH of the secrets dropped the identity (check as %q)", chk.last())
	}
	mustStatus(t, "patch system", f.do(http.MethodPatch, p, map[string]any{"identity": map[string]any{"type": "systemassigned"}}), http.StatusCreated)
	m = f.do(http.MethodGet, p, nil).json(t)
	if get(m, "identity.type") != "systemAssigned" || get(m, "identity.principalId") != principal || chk.last() != "" {
		t.Fatalf("back to system-assigned: %v (check as %q)", m["identity"], chk.last())
	}

	for _, tc := range []struct {
		desc     string
		identity any
		contains string
	}{
		{"none", map[string]any{"type": "None"}, `identity.type "None" is not supported for credential sets`},
		{"both", map[string]any{"type": "SystemAssigned, UserAssigned", "userAssignedIdentities": map[string]any{uami: map[string]any{}}}, "is not supported for credential sets"},
		{"two identities", map[string]any{"type": "UserAssigned", "userAssignedIdentities": map[string]any{uami: map[string]any{}, uami + "2": map[string]any{}}}, "exactly one"},
		{"no identity", map[string]any{"type": "UserAssigned"}, "exactly one"},
		{"system with a user identity", map[string]any{"type": "SystemAssigned", "userAssignedIdentities": map[string]any{uami: map[string]any{}}}, "must be empty"},
		{"not an identity id", map[string]any{"type": "UserAssigned", "userAssignedIdentities": map[string]any{"/subscriptions/x/bad": map[string]any{}}}, "Invalid user-assigned managed identity resource ID"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			r := f.do(http.MethodPut, p, withIdentity(tc.identity))
			if r.status != http.StatusBadRequest || r.errorCode() != rules.CodeInvalidIdentity || !strings.Contains(r.errorMessage(), tc.contains) {
				t.Fatalf("%d %s %q, want 400 %s containing %q", r.status, r.errorCode(), r.errorMessage(), rules.CodeInvalidIdentity, tc.contains)
			}
		})
	}
	if m = f.do(http.MethodGet, p, nil).json(t); get(m, "identity.type") != "systemAssigned" {
		t.Fatalf("a refused PUT changed the identity: %v", m["identity"])
	}
}
