package e2e

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/arcacache/arca/internal/testutil/arcaproc"
	"github.com/arcacache/arca/internal/testutil/kvfixture"
	"github.com/arcacache/arca/internal/testutil/oidcfixture"
	"github.com/arcacache/arca/internal/testutil/upstreamreg"
)

// A credential set's Key Vault secrets are read as the user-assigned
// identity it names: the real binary gets a token for that identity from
// the managed identity endpoint (App Service protocol, loopback fixture)
// through azidentity, and the loopback Key Vault (reached through
// HTTPS_PROXY with its CA in SSL_CERT_FILE, so the real vault URI and
// azsecrets' challenge check are used) grants `get` to that identity
// only. A set without one reads as the server's credential and is refused;
// credential health names the identity and the vault's answer, and a
// pull never falls back to another identity.
func TestCredentialSetKeyVaultIdentity(t *testing.T) {
	iss := oidcfixture.Start(t)
	up := upstreamreg.Start(t, upstreamreg.Options{Auth: upstreamreg.Htpasswd, Username: "puller", Password: "kv-held-pw-8d1e"})
	v1, v2 := newImage(t, 161, "amd64", 16<<10), newImage(t, 162, "amd64", 16<<10)
	seedImage(t, up, "library/app", "v1", v1)
	seedImage(t, up, "library/app", "v2", v2)
	const (
		reader = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/MyResourceGroup/providers/Microsoft.ManagedIdentity/userAssignedIdentities/KVReader"
		other  = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/MyResourceGroup/providers/Microsoft.ManagedIdentity/userAssignedIdentities/NoAccess"
		userID = "https://mykeyvault.vault.azure.net/secrets/usernamesecret"
		passID = "https://mykeyvault.vault.azure.net/secrets/passwordsecret"
	)
	// The fixture's tokens name the identity asked for (mi_res_id) as sub.
	kv := kvfixture.Start(t, kvfixture.Options{Secrets: map[string]string{"usernamesecret": up.Username, "passwordsecret": up.Password},
		Readers: map[string]bool{strings.ToLower(reader): true}})
	a := &arca{arcaproc.Start(t, arcaproc.Options{Bin: arcaBin, Args: []string{"--insecure-upstream", up.Host},
		Env: []string{"ARCA_ADMIN_TOKEN=" + ptAdminToken, "IDENTITY_ENDPOINT=" + iss.URL() + oidcfixture.MSIPath, "IDENTITY_HEADER=" + iss.Header,
			"HTTPS_PROXY=" + kv.ProxyURL(), "SSL_CERT_FILE=" + kv.CAFile()}})}

	health := func(set string) (status, msg string, identity map[string]any) {
		t.Helper()
		return credentialSetHealth(t, a.cli(t, "credential-set", "show", "-r", "default", "-n", set))
	}

	a.cli(t, "credential-set", "create", "-r", "default", "-n", "kvcreds", "-l", up.Host, "-u", userID, "-p", passID, "--identity", reader, "-o", "none")
	if st, msg, id := health("kvcreds"); st != "Healthy" || id["type"] != "userAssigned" || id["userAssignedIdentities"].(map[string]any)[reader] == nil {
		t.Fatalf("set read as %s: %s %q, identity %v", reader, st, msg, id)
	}
	if iss.MSIRequests() == 0 || kv.Gets() == 0 {
		t.Fatalf("managed identity endpoint asked %d times, vault answered %d GETs", iss.MSIRequests(), kv.Gets())
	}
	a.cacheRule(t, "kvrule", up.Host+"/library/app", "kv/app", "-c", "kvcreds")
	c := crane(t)
	if got := c.crane("digest", a.Ref("kv/app:v1")); got != v1.Digest() {
		t.Fatalf("pull through the set: %s, want %s", got, v1.Digest())
	}

	// The system-assigned identity is the server's Key Vault credential
	// (here the host's system-assigned managed identity): no `get`.
	a.cli(t, "credential-set", "create", "-r", "default", "-n", "syscreds", "-l", up.Host, "-u", userID, "-p", passID, "-o", "none")
	st, msg, id := health("syscreds")
	if st != "Unhealthy" || id["type"] != "systemAssigned" || !strings.Contains(msg, "403 (Forbidden)") || !strings.Contains(msg, "does not have secrets get permission") {
		t.Fatalf("system-assigned set: %s %q, identity %v; want Unhealthy with the vault's 403", st, msg, id)
	}
	a.cli(t, "credential-set", "update", "-r", "default", "-n", "syscreds", "--identity", reader, "-o", "none")
	if st, msg, _ := health("syscreds"); st != "Healthy" {
		t.Fatalf("after --identity %s: %s %q", reader, st, msg)
	}

	// Switching kvcreds to an identity without `get` takes effect at the
	// next upstream request: the login made with the previous identity's
	// secrets is not reused.
	a.cli(t, "credential-set", "update", "-r", "default", "-n", "kvcreds", "--identity", other, "-o", "none")
	if r := do(t, "GET", a.URL()+"/v2/kv/app/manifests/v2", map[string]string{"Accept": mtAcceptAll}, nil); r.Status != http.StatusFailedDependency ||
		!strings.Contains(string(r.Body), "kvrule") {
		t.Fatalf("pull after switching kvcreds to %s: %s; want 424 naming rule kvrule", other, r)
	}
	a.cli(t, "credential-set", "update", "-r", "default", "-n", "kvcreds", "--identity", reader, "-o", "none")

	// An identity without `get`: health names it; a pull through a rule
	// using the set is a 424 naming the rule, never a pull as another
	// identity or an anonymous one.
	a.cli(t, "credential-set", "create", "-r", "default", "-n", "nogetcreds", "-l", up.Host, "-u", userID, "-p", passID, "--identity", other, "-o", "none")
	st, msg, _ = health("nogetcreds")
	if st != "Unhealthy" || !strings.Contains(msg, "as user-assigned managed identity "+other) || !strings.Contains(msg, "403 (Forbidden)") ||
		!strings.Contains(msg, "needs 'get'") || strings.Contains(msg, "\n") {
		t.Fatalf("set read as %s: %s %q; want Unhealthy naming the identity and the 403 on one line", other, st, msg)
	}
	a.cacheRule(t, "nogetrule", up.Host+"/library/app", "noget/app", "-c", "nogetcreds")
	r := do(t, "GET", a.URL()+"/v2/noget/app/manifests/v2", map[string]string{"Accept": mtAcceptAll}, nil)
	if r.Status != http.StatusFailedDependency || !strings.Contains(string(r.Body), "nogetrule") || !strings.Contains(string(r.Body), "403") {
		t.Fatalf("pull as an identity without get: %s; want 424 naming rule nogetrule and the vault's 403", r)
	}
	// Switching that set to the reader makes the rule work.
	a.cli(t, "credential-set", "update", "-r", "default", "-n", "nogetcreds", "--identity", reader, "-o", "none")
	if got := c.crane("digest", a.Ref("noget/app:v2")); got != v2.Digest() {
		t.Fatalf("pull after --identity %s: %s, want %s", reader, got, v2.Digest())
	}
	if strings.Contains(a.Logs(), up.Password) {
		t.Fatal("the upstream password (a Key Vault secret) leaked into the logs")
	}
}

// credentialSetHealth reads the health of a credential set's one
// credential, and its identity, from the CLI's JSON of the set.
func credentialSetHealth(t *testing.T, out string) (status, msg string, identity map[string]any) {
	t.Helper()
	var cs struct {
		Identity        map[string]any `json:"identity"`
		AuthCredentials []struct {
			CredentialHealth struct {
				Status       string `json:"status"`
				ErrorMessage string `json:"errorMessage"`
			} `json:"credentialHealth"`
		} `json:"authCredentials"`
	}
	if err := json.Unmarshal([]byte(out), &cs); err != nil || len(cs.AuthCredentials) != 1 {
		t.Fatalf("credential set: %v\n%s", err, out)
	}
	h := cs.AuthCredentials[0].CredentialHealth
	return h.Status, h.ErrorMessage, cs.Identity
}
