package secrets

import (
	"context"
	"encoding/json"
	"errors"
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

// failingCredential is an Azure identity that cannot get a token (no
// managed identity endpoint, say).
type failingCredential struct{}

func (failingCredential) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	return azcore.AccessToken{}, errors.New("ManagedIdentityCredential: no managed identity endpoint is available")
}

// Listing follows nextLink over every page, skips disabled secrets, and
// returns names and version-less URIs only; the vault may be named or
// given by URL.
func TestKeyVaultListSecrets(t *testing.T) {
	planted := map[string]string{"alpha": "planted-a-91f2", "bravo": "planted-b-33c0", "charlie": "planted-c-7e1d",
		"delta": "planted-d-0a55", "echo": "planted-e-c4b8", "foxtrot": "planted-f-2d19", "golf": "planted-g-6b7a"}
	kv, hc := startKeyVault(t, kvfixture.Options{Secrets: planted, PageSize: 2, Disabled: map[string]bool{"bravo": true, "foxtrot": true}})
	r, err := New(Options{HTTPClient: hc, KeyVault: KeyVaultOptions{Credential: &fakeCredential{}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, vault := range []string{"MyKeyvault", "https://mykeyvault.vault.azure.net/", "https://MyKeyvault.vault.azure.net"} {
		before := kv.Lists()
		names, truncated, err := r.ListKeyVaultSecrets(ctx, vault, KeyVaultIdentity{}, 100)
		if err != nil {
			t.Fatalf("%s: %v", vault, err)
		}
		var got []string
		for _, n := range names {
			got = append(got, n.Name+"="+n.URI)
		}
		want := []string{"alpha", "charlie", "delta", "echo", "golf"}
		for i, w := range want {
			want[i] = w + "=https://mykeyvault.vault.azure.net/secrets/" + w
		}
		if strings.Join(got, " ") != strings.Join(want, " ") || truncated {
			t.Fatalf("%s: listed %v (truncated %v), want %v", vault, got, truncated, want)
		}
		if pages := kv.Lists() - before; pages != 4 {
			t.Fatalf("%s: %d list pages answered, want 4 (7 secrets, 2 a page)", vault, pages)
		}
	}
	if kv.Gets() != 0 {
		t.Fatalf("listing read %d secret values", kv.Gets())
	}
	// At most max names; the listing stops there.
	names, truncated, err := r.ListKeyVaultSecrets(ctx, "MyKeyvault", KeyVaultIdentity{}, 3)
	if err != nil || len(names) != 3 || !truncated || names[2].Name != "delta" {
		t.Fatalf("max 3: %v truncated=%v err=%v, want alpha charlie delta, truncated", names, truncated, err)
	}
	// A disabled secret is not read either.
	if _, err := r.Resolve(ctx, "https://mykeyvault.vault.azure.net/secrets/bravo"); err == nil || !strings.Contains(err.Error(), "disabled secret") {
		t.Fatalf("resolve a disabled secret: %v", err)
	}
}

// Each failure of a listing has its kind (errors.Is) and a one-line
// message naming the vault, never a secret value.
func TestKeyVaultListSecretsErrors(t *testing.T) {
	iss := oidcfixture.Start(t)
	t.Setenv("IDENTITY_ENDPOINT", iss.URL()+oidcfixture.MSIPath)
	t.Setenv("IDENTITY_HEADER", iss.Header)
	const uamiID = "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/KVReader"
	_, hc := startKeyVault(t, kvfixture.Options{Secrets: map[string]string{"pw": "planted-pw-8c1e"}, Vaults: []string{"myvault"},
		Readers: map[string]bool{strings.ToLower(uamiID): true}})
	ok, err := New(Options{HTTPClient: hc, KeyVault: KeyVaultOptions{Credential: &fakeCredential{}}})
	if err != nil {
		t.Fatal(err)
	}
	noIdentity, err := New(Options{HTTPClient: hc, KeyVault: KeyVaultOptions{Credential: failingCredential{}}})
	if err != nil {
		t.Fatal(err)
	}
	other := UserAssigned(strings.Replace(uamiID, "KVReader", "Other", 1))
	for _, c := range []struct {
		name  string
		r     *Resolver
		vault string
		id    KeyVaultIdentity
		kind  error
		text  string
	}{
		{"bad vault name", ok, "my_vault", KeyVaultIdentity{}, ErrInvalidRef, "3-24 letters"},
		{"not a vault URL", ok, "https://example.com", KeyVaultIdentity{}, ErrInvalidRef, "vault.azure.net"},
		{"a secret URI", ok, "https://myvault.vault.azure.net/secrets/pw", KeyVaultIdentity{}, ErrInvalidRef, "without /secrets/"},
		{"no such vault", ok, "othervault", KeyVaultIdentity{}, ErrVaultNotFound, "no such host othervault.vault.azure.net"},
		{"no list permission", ok, "myvault", other, ErrVaultForbidden, "403 (Forbidden): The user, group or application 'oid=" + strings.ToLower(other.ResourceID) + "' does not have secrets list permission"},
		{"identity without a token", noIdentity, "myvault", KeyVaultIdentity{}, ErrIdentityUnavailable, "no managed identity endpoint"},
		{"not a managed identity", ok, "myvault", KeyVaultIdentity{ClientID: "6f1c2d3e"}, ErrIdentityUnavailable, "only a managed identity"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := c.r.ListKeyVaultSecrets(context.Background(), c.vault, c.id, 100)
			if !errors.Is(err, c.kind) || !strings.Contains(err.Error(), c.text) || strings.Contains(err.Error(), "\n") || strings.Contains(err.Error(), "planted") {
				t.Fatalf("error %q, want %v with %q on one line", err, c.kind, c.text)
			}
		})
	}
	// The reader lists.
	if names, _, err := ok.ListKeyVaultSecrets(context.Background(), "myvault", UserAssigned(uamiID), 100); err != nil || len(names) != 1 || names[0].Name != "pw" {
		t.Fatalf("as the reader: %v %v", names, err)
	}
}
