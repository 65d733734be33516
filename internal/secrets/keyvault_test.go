package secrets

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/arcacache/arca/internal/testutil/kvfixture"
	"github.com/arcacache/arca/internal/testutil/oidcfixture"
)

const (
	testToken = "eyJ0eXAiOiJKV1QifQ.fake-access-token"
)

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// fakeCredential is an azcore.TokenCredential that records what the
// challenge policy asked for.
type fakeCredential struct {
	mu      sync.Mutex
	scopes  []string
	tenants []string
}

func (c *fakeCredential) GetToken(_ context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.scopes = append(c.scopes, o.Scopes...)
	c.tenants = append(c.tenants, o.TenantID)
	return azcore.AccessToken{Token: testToken, ExpiresOn: time.Now().Add(time.Hour)}, nil
}

// startKeyVault runs the loopback Key Vault, accepting testToken, and
// returns a client that reaches it for any *.vault.azure.net host, so the
// resolver uses real vault URIs and azsecrets' challenge-resource check
// runs unmodified.
func startKeyVault(t *testing.T, o kvfixture.Options) (*kvfixture.Vault, *http.Client) {
	t.Helper()
	o.Token = testToken
	kv := kvfixture.Start(t, o)
	return kv, kv.Client(t)
}

func TestKeyVaultResolve(t *testing.T) {
	kv, hc := startKeyVault(t, kvfixture.Options{Secrets: map[string]string{"usernamesecret": "planted-user-7f3a"}})
	cred := &fakeCredential{}
	r, err := New(Options{HTTPClient: hc, KeyVault: KeyVaultOptions{Credential: cred}})
	if err != nil {
		t.Fatal(err)
	}
	got, err := r.Resolve(context.Background(), "https://MyKeyvault.vault.azure.net/secrets/usernamesecret")
	if err != nil {
		t.Fatal(err)
	}
	if got != "planted-user-7f3a" {
		t.Fatalf("value = %q", got)
	}
	if kv.Challenges() != 1 || kv.Gets() != 1 || kv.APIVersions()[0] == "" {
		t.Fatalf("challenges=%d gets=%d api-versions=%v, want 1 challenge then 1 authorized GET", kv.Challenges(), kv.Gets(), kv.APIVersions())
	}
	if len(cred.scopes) == 0 || cred.scopes[0] != "https://vault.azure.net/.default" || cred.tenants[0] != kvfixture.Tenant {
		t.Fatalf("token requested for scopes %v tenants %v", cred.scopes, cred.tenants)
	}
	// A versioned URI for a missing secret: one-line error with Key Vault's code.
	_, err = r.Resolve(context.Background(), "https://MyKeyvault.vault.azure.net/secrets/nosuch/0123456789abcdef")
	if err == nil || !strings.Contains(err.Error(), "404 (SecretNotFound)") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("missing secret error = %q", err)
	}
}

// A challenge naming a resource outside the vault's domain is refused by
// azsecrets unless verification is disabled: the token never leaves.
func TestKeyVaultChallengeVerification(t *testing.T) {
	for _, disable := range []bool{false, true} {
		t.Run(fmt.Sprint("disable=", disable), func(t *testing.T) {
			_, hc := startKeyVault(t, kvfixture.Options{Resource: "https://vault.attacker.example", Secrets: map[string]string{"pw": "v"}})
			cred := &fakeCredential{}
			r, err := New(Options{HTTPClient: hc, KeyVault: KeyVaultOptions{
				Credential: cred, DisableChallengeResourceVerification: disable}})
			if err != nil {
				t.Fatal(err)
			}
			_, err = r.Resolve(context.Background(), "https://myvault.vault.azure.net/secrets/pw")
			if disable {
				if err != nil {
					t.Fatalf("with verification disabled: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), "doesn't match the requested domain") {
				t.Fatalf("error = %v, want challenge mismatch", err)
			}
			if len(cred.scopes) != 0 {
				t.Fatalf("a token was requested for %v", cred.scopes)
			}
		})
	}
}

// Rotation: after the TTL the resolver reads the new value, without any
// change to the reference.
func TestKeyVaultRotation(t *testing.T) {
	kv, hc := startKeyVault(t, kvfixture.Options{Secrets: map[string]string{"pw": "old"}})
	now := time.Unix(1700000000, 0)
	r, err := New(Options{HTTPClient: hc, TTL: time.Minute,
		KeyVault: KeyVaultOptions{Credential: &fakeCredential{}}, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	ref := "https://myvault.vault.azure.net/secrets/pw"
	resolve := func() string {
		t.Helper()
		v, err := r.Resolve(context.Background(), ref)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	if v := resolve(); v != "old" {
		t.Fatalf("got %q", v)
	}
	kv.Set("pw", "new")
	now = now.Add(30 * time.Second)
	if v := resolve(); v != "old" || kv.Gets() != 1 {
		t.Fatalf("within TTL: got %q after %d GETs, want cached old value", v, kv.Gets())
	}
	now = now.Add(31 * time.Second)
	if v := resolve(); v != "new" || kv.Gets() != 2 {
		t.Fatalf("after TTL: got %q after %d GETs, want new value", v, kv.Gets())
	}
}

// Each Key Vault identity gets its own token from the managed identity
// endpoint (App Service protocol, loopback fixture) and only reads the
// vaults that grant it `get`; a value read as one identity is not served
// from the cache to another.
func TestKeyVaultResolveAsIdentity(t *testing.T) {
	iss := oidcfixture.Start(t)
	t.Setenv("IDENTITY_ENDPOINT", iss.URL()+oidcfixture.MSIPath)
	t.Setenv("IDENTITY_HEADER", iss.Header)
	const uami = "6f1c2d3e-0000-4000-8000-00000000a11c"
	const uamiID = "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/KVReader"
	_, hc := startKeyVault(t, kvfixture.Options{Secrets: map[string]string{"pw": "planted-pw-51c2"},
		Readers: map[string]bool{uami: true, strings.ToLower(uamiID): true}})
	r, err := New(Options{HTTPClient: hc, KeyVault: KeyVaultOptions{Credential: &fakeCredential{}}})
	if err != nil {
		t.Fatal(err)
	}
	ref := "https://myvault.vault.azure.net/secrets/pw"
	ctx := context.Background()
	userAssigned := KeyVaultIdentity{ManagedIdentity: true, ClientID: uami}
	if v, err := r.ResolveAs(ctx, ref, userAssigned); err != nil || v != "planted-pw-51c2" {
		t.Fatalf("as user-assigned %s: %q, %v", uami, v, err)
	}
	if iss.MSIRequests() == 0 {
		t.Fatal("no token was asked of the managed identity endpoint")
	}
	// By resource id, as a credential set names its identity.
	if v, err := r.ResolveAs(ctx, ref, UserAssigned(uamiID)); err != nil || v != "planted-pw-51c2" {
		t.Fatalf("as user-assigned %s: %q, %v", uamiID, v, err)
	}
	_, err = r.ResolveAs(ctx, ref, KeyVaultIdentity{ManagedIdentity: true})
	if err == nil || !strings.Contains(err.Error(), "403 (Forbidden)") || !strings.Contains(err.Error(), "as the host's system-assigned managed identity") {
		t.Fatalf("as the system-assigned identity (no get on the vault): %v, want 403 naming it", err)
	}
	other := UserAssigned(strings.Replace(uamiID, "KVReader", "Other", 1))
	_, err = r.ResolveAs(ctx, ref, other)
	if err == nil || !strings.Contains(err.Error(), "403 (Forbidden)") || !strings.Contains(err.Error(), "as user-assigned managed identity "+other.ResourceID) {
		t.Fatalf("as an identity without get: %v, want 403 naming it", err)
	}
	// The server-wide credential is a third identity.
	if v, err := r.Resolve(ctx, ref); err != nil || v != "planted-pw-51c2" {
		t.Fatalf("server-wide: %q, %v", v, err)
	}
	if _, err := r.ResolveAs(ctx, ref, KeyVaultIdentity{ClientID: uami}); err == nil {
		t.Fatal("an identity that is not a managed identity was accepted")
	}
}
