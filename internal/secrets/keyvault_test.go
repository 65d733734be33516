package secrets

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/arcacache/arca/internal/testutil/oidcfixture"
)

const (
	testTenant = "72f988bf-86f1-41af-91ab-2d7cd011db47"
	testToken  = "eyJ0eXAiOiJKV1QifQ.fake-access-token"
)

// fakeKeyVault speaks Key Vault's secrets REST protocol as azsecrets
// expects it: an unauthenticated first request gets a 401 challenge
// naming the tenant and resource; authenticated GETs of
// /secrets/{name}/{version}?api-version=... return {"value","id",...}.
type fakeKeyVault struct {
	t         *testing.T
	resource  string // resource named in the challenge
	mu        sync.Mutex
	secrets   map[string]string // name -> current value
	gets      int
	apiVers   []string
	challenge int
	// readers, when set, are the identities (token subjects) granted
	// `get`; others are refused with 403 as Key Vault does. Unset, only
	// testToken is accepted.
	readers map[string]bool
}

func (f *fakeKeyVault) set(name, value string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.secrets[name] = value
}

func (f *fakeKeyVault) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	auth := r.Header.Get("Authorization")
	if f.readers != nil && strings.HasPrefix(auth, "Bearer ") && auth != "Bearer "+testToken {
		if sub := tokenSubject(strings.TrimPrefix(auth, "Bearer ")); !f.readers[sub] {
			writeJSON(w, http.StatusForbidden, map[string]any{"error": map[string]string{"code": "Forbidden",
				"message": fmt.Sprintf("The user, group or application 'oid=%s' does not have secrets get permission on key vault.", sub)}})
			return
		}
	} else if auth != "Bearer "+testToken {
		f.challenge++
		w.Header().Set("WWW-Authenticate", fmt.Sprintf(
			`Bearer authorization="https://login.microsoftonline.com/%s", resource="%s"`, testTenant, f.resource))
		writeJSON(w, http.StatusUnauthorized, map[string]any{"error": map[string]string{
			"code": "Unauthorized", "message": "AKV10000: Request is missing a Bearer or PoP token."}})
		return
	}
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	if r.Method != http.MethodGet || len(parts) < 2 || parts[0] != "secrets" || r.URL.Query().Get("api-version") == "" {
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": map[string]string{"code": "BadParameter", "message": "bad request"}})
		return
	}
	f.gets++
	f.apiVers = append(f.apiVers, r.URL.Query().Get("api-version"))
	v, ok := f.secrets[parts[1]]
	if !ok {
		writeJSON(w, http.StatusNotFound, map[string]any{"error": map[string]string{"code": "SecretNotFound",
			"message": fmt.Sprintf("A secret with (name/id) %s was not found in this key vault.", parts[1])}})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"value":      v,
		"id":         "https://" + r.Host + "/secrets/" + parts[1] + "/4387e9f3d6e14c459867679a90fd0f79",
		"attributes": map[string]any{"enabled": true, "created": 1700000000, "updated": 1700000000, "recoveryLevel": "Recoverable+Purgeable"},
	})
}

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

// startKeyVault serves f over HTTPS with a certificate for
// *.vault.azure.net and returns a client that dials it for any host, so
// the resolver uses real vault URIs and azsecrets' challenge-resource
// check runs unmodified.
func startKeyVault(t *testing.T, f *fakeKeyVault) *http.Client {
	t.Helper()
	cert, pool := selfSigned(t, "*.vault.azure.net")
	srv := httptest.NewUnstartedServer(f)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	addr := srv.Listener.Addr().String()
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool},
		// Vault hosts go to the fixture; others (a loopback token
		// endpoint) are dialled as addressed.
		DialContext: func(ctx context.Context, network, target string) (net.Conn, error) {
			if host, _, _ := net.SplitHostPort(target); strings.HasSuffix(host, ".vault.azure.net") {
				target = addr
			}
			return (&net.Dialer{}).DialContext(ctx, network, target)
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func selfSigned(t *testing.T, dnsName string) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: dnsName}, DNSNames: []string{dnsName},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, IsCA: true, BasicConstraintsValid: true,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

func TestKeyVaultResolve(t *testing.T) {
	kv := &fakeKeyVault{t: t, resource: "https://vault.azure.net", secrets: map[string]string{"usernamesecret": "planted-user-7f3a"}}
	cred := &fakeCredential{}
	r, err := New(Options{HTTPClient: startKeyVault(t, kv), KeyVault: KeyVaultOptions{Credential: cred}})
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
	if kv.challenge != 1 || kv.gets != 1 || kv.apiVers[0] == "" {
		t.Fatalf("challenges=%d gets=%d api-versions=%v, want 1 challenge then 1 authorized GET", kv.challenge, kv.gets, kv.apiVers)
	}
	if len(cred.scopes) == 0 || cred.scopes[0] != "https://vault.azure.net/.default" || cred.tenants[0] != testTenant {
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
			kv := &fakeKeyVault{t: t, resource: "https://vault.attacker.example", secrets: map[string]string{"pw": "v"}}
			cred := &fakeCredential{}
			r, err := New(Options{HTTPClient: startKeyVault(t, kv), KeyVault: KeyVaultOptions{
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
	kv := &fakeKeyVault{t: t, resource: "https://vault.azure.net", secrets: map[string]string{"pw": "old"}}
	now := time.Unix(1700000000, 0)
	r, err := New(Options{HTTPClient: startKeyVault(t, kv), TTL: time.Minute,
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
	kv.set("pw", "new")
	now = now.Add(30 * time.Second)
	if v := resolve(); v != "old" || kv.gets != 1 {
		t.Fatalf("within TTL: got %q after %d GETs, want cached old value", v, kv.gets)
	}
	now = now.Add(31 * time.Second)
	if v := resolve(); v != "new" || kv.gets != 2 {
		t.Fatalf("after TTL: got %q after %d GETs, want new value", v, kv.gets)
	}
}

// tokenSubject reads a JWT's sub without verifying it: the fixture vault
// only needs to tell identities apart.
func tokenSubject(tok string) string {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return ""
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return ""
	}
	var c struct {
		Sub string `json:"sub"`
	}
	_ = json.Unmarshal(b, &c)
	return c.Sub
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
	kv := &fakeKeyVault{t: t, resource: "https://vault.azure.net", secrets: map[string]string{"pw": "planted-pw-51c2"},
		readers: map[string]bool{uami: true, strings.ToLower(uamiID): true}}
	r, err := New(Options{HTTPClient: startKeyVault(t, kv), KeyVault: KeyVaultOptions{Credential: &fakeCredential{}}})
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
