package mgmt

import (
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/arcacache/arca/internal/secrets"
	"github.com/arcacache/arca/internal/testutil/kvfixture"
	"github.com/arcacache/arca/internal/testutil/oidcfixture"
)

// subjectCredential hands out a token naming sub (the Key Vault fixture
// tells identities apart by the unverified JWT subject), or fails with err.
type subjectCredential struct {
	sub string
	err error
}

func (c subjectCredential) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	if c.err != nil {
		return azcore.AccessToken{}, c.err
	}
	enc := base64.RawURLEncoding.EncodeToString
	return azcore.AccessToken{Token: enc([]byte(`{"alg":"none"}`)) + "." + enc([]byte(`{"sub":"`+c.sub+`"}`)) + ".sig",
		ExpiresOn: time.Now().Add(time.Hour)}, nil
}

// kvListFixture serves the management API with a real secrets.Resolver
// reading the loopback Key Vault as cred.
func kvListFixture(t *testing.T, kv *kvfixture.Vault, cred azcore.TokenCredential) *fixture {
	res, err := secrets.New(secrets.Options{HTTPClient: kv.Client(t), KeyVault: secrets.KeyVaultOptions{Credential: cred}})
	if err != nil {
		t.Fatal(err)
	}
	return newFixture(t, func(o *Options) { o.KeyVault = res })
}

// POST registries/R/listKeyVaultSecrets lists the vault's enabled secrets
// over every page, names and URIs only; the vault's and the identity's
// failures are 424s with a code each and the vault's message; no secret
// value is in a response or the log.
func TestListKeyVaultSecrets(t *testing.T) {
	iss := oidcfixture.Start(t)
	t.Setenv("IDENTITY_ENDPOINT", iss.URL()+oidcfixture.MSIPath)
	t.Setenv("IDENTITY_HEADER", iss.Header)
	const noList = "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/NoList"
	planted := map[string]string{"usernamesecret": "planted-user-4e1a", "passwordsecret": "planted-pw-b83c", "old": "planted-old-19d2",
		"tls-cert": "planted-cert-7a0f", "zeta": "planted-z-55e6"}
	kv := kvfixture.Start(t, kvfixture.Options{Secrets: planted, PageSize: 2, Disabled: map[string]bool{"old": true},
		Vaults: []string{"mykeyvault"}, Readers: map[string]bool{"arca-server": true}})
	f := kvListFixture(t, kv, subjectCredential{sub: "arca-server"})
	path := base("default") + "/listKeyVaultSecrets"

	r := f.do(http.MethodPost, path, map[string]any{"keyVault": "MyKeyvault"})
	mustStatus(t, "list", r, http.StatusOK)
	body := r.json(t)
	var got []string
	for _, v := range body["value"].([]any) {
		s := v.(map[string]any)
		got = append(got, s["name"].(string)+"="+s["secretIdentifier"].(string))
	}
	want := "passwordsecret=https://mykeyvault.vault.azure.net/secrets/passwordsecret tls-cert=https://mykeyvault.vault.azure.net/secrets/tls-cert " +
		"usernamesecret=https://mykeyvault.vault.azure.net/secrets/usernamesecret zeta=https://mykeyvault.vault.azure.net/secrets/zeta"
	if strings.Join(got, " ") != want || body["keyVaultUri"] != "https://MyKeyvault.vault.azure.net" || body["truncated"] != false {
		t.Fatalf("listed %s", r.body)
	}
	if kv.Lists() != 3 || kv.Gets() != 0 {
		t.Fatalf("vault answered %d list pages and %d GETs, want 3 pages (5 secrets, 2 a page) and no GET", kv.Lists(), kv.Gets())
	}
	// By URL, as the identity block of a credential set names it.
	r = f.do(http.MethodPost, path, map[string]any{"keyVault": "https://mykeyvault.vault.azure.net", "identity": map[string]any{"type": "SystemAssigned"}})
	mustStatus(t, "list by URL", r, http.StatusOK)

	for _, c := range []struct {
		name   string
		f      *fixture
		body   any
		status int
		code   string
		text   string
	}{
		{"no vault", f, map[string]any{}, 400, "InvalidKeyVault", "keyVault is required"},
		{"bad vault name", f, map[string]any{"keyVault": "my_vault"}, 400, "InvalidKeyVault", "3-24 letters"},
		{"a secret URI", f, map[string]any{"keyVault": "https://mykeyvault.vault.azure.net/secrets/pw"}, 400, "InvalidKeyVault", "without /secrets/"},
		{"bad identity", f, map[string]any{"keyVault": "mykeyvault", "identity": map[string]any{"type": "UserAssigned"}}, 400, "InvalidIdentity", "exactly one"},
		{"no such vault", f, map[string]any{"keyVault": "othervault"}, 424, "KeyVaultNotFound", "no such host othervault.vault.azure.net"},
		{"no list permission", f, map[string]any{"keyVault": "mykeyvault", "identity": map[string]any{"type": "UserAssigned",
			"userAssignedIdentities": map[string]any{noList: map[string]any{}}}}, 424, "KeyVaultAccessDenied",
			"does not have secrets list permission on key vault. Grant the user-assigned identity " + noList + " the list permission"},
		{"server credential refused", kvListFixture(t, kv, subjectCredential{sub: "someone"}), map[string]any{"keyVault": "mykeyvault"}, 424,
			"KeyVaultAccessDenied", "Grant arca's Key Vault credential the list permission"},
		{"no identity", kvListFixture(t, kv, subjectCredential{err: errors.New("DefaultAzureCredential: failed to acquire a token")}),
			map[string]any{"keyVault": "mykeyvault"}, 424, "KeyVaultIdentityUnavailable", "failed to acquire a token"},
		{"no lister", newFixture(t), map[string]any{"keyVault": "mykeyvault"}, 501, "NotImplemented", "cannot list"},
	} {
		r := c.f.do(http.MethodPost, path, c.body)
		if r.status != c.status || r.errorCode() != c.code || !strings.Contains(r.errorMessage(), c.text) {
			t.Errorf("%s: %d %s, want %d %s with %q", c.name, r.status, r.body, c.status, c.code, c.text)
		}
	}
	mustStatus(t, "GET", f.do(http.MethodGet, path, nil), http.StatusMethodNotAllowed)
	for _, v := range planted {
		if strings.Contains(f.logs.String(), v) {
			t.Fatalf("the log holds the secret value %q", v)
		}
	}
}

// Listing a vault's secrets needs the access that creates credential sets
// on the registry: a Reader, an AcrPull principal and another registry's
// Contributor are refused.
func TestListKeyVaultSecretsAccess(t *testing.T) {
	kv := kvfixture.Start(t, kvfixture.Options{Secrets: map[string]string{"pw": "planted-pw-2f4d"}, Readers: map[string]bool{"arca-server": true}})
	f := kvListFixture(t, kv, subjectCredential{sub: "arca-server"})
	tokens := map[string]string{}
	for _, p := range []struct{ name, role, reg string }{
		{"contrib", RoleContributor, ""}, {"reader", RoleReader, ""}, {"puller", RoleAcrPull, ""}, {"team", RoleContributor, "teamreg"},
	} {
		tokens[p.name] = "Bearer " + f.newPrincipalToken(p.name, p.role, p.reg)
	}
	list := map[string]any{"keyVault": "mykeyvault"}
	for _, c := range []struct {
		who, reg string
		want     int
	}{
		{"contrib", "default", 200}, {"team", "teamreg", 200},
		{"reader", "default", 403}, {"puller", "default", 403}, {"team", "default", 403},
	} {
		// The same principals may (or may not) create a credential set.
		put := f.doAuth(http.MethodPut, base(c.reg)+"/credentialSets/kv-"+c.who, credSetBody("docker.io", "env://U", "env://P"), tokens[c.who])
		r := f.doAuth(http.MethodPost, base(c.reg)+"/listKeyVaultSecrets", list, tokens[c.who])
		if r.status != c.want || (c.want == 403 && r.errorCode() != "AuthorizationFailed") {
			t.Errorf("%s on %s: %d %s, want %d", c.who, c.reg, r.status, r.body, c.want)
		}
		if (put.status/100 == 2) != (c.want == 200) {
			t.Errorf("%s on %s: creating a credential set answered %d, listing %d: not the same permission", c.who, c.reg, put.status, r.status)
		}
	}
	if kv.Lists() != 2 {
		t.Fatalf("the vault was listed %d times, want 2 (only the allowed callers)", kv.Lists())
	}
}
