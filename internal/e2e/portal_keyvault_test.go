package e2e

import (
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/arcacache/arca/internal/testutil/arcaproc"
	"github.com/arcacache/arca/internal/testutil/kvfixture"
	"github.com/arcacache/arca/internal/testutil/oidcfixture"
	"github.com/arcacache/arca/internal/testutil/upstreamreg"
)

// kvArcaEnv is the environment that has the real binary read the loopback
// Key Vault kv as the host's system-assigned managed identity (the
// managed identity endpoint of iss): HTTPS_PROXY reaches the vault by
// its real URI, SSL_CERT_FILE trusts it.
func kvArcaEnv(iss *oidcfixture.Issuer, kv *kvfixture.Vault) []string {
	return []string{"IDENTITY_ENDPOINT=" + iss.URL() + oidcfixture.MSIPath, "IDENTITY_HEADER=" + iss.Header,
		"HTTPS_PROXY=" + kv.ProxyURL(), "SSL_CERT_FILE=" + kv.CAFile()}
}

// TestPortalKeyVaultPicker: Create credentials > Select from Key Vault
// lists the vault's enabled secrets (over several pages of the vault's
// listing, read as the server's identity) into the two selects; the
// secrets picked make a healthy credential set that pulls through a rule.
// A vault that cannot be listed is said so at the form, which then takes
// typed names.
func TestPortalKeyVaultPicker(t *testing.T) {
	iss := oidcfixture.Start(t)
	up := upstreamreg.Start(t, upstreamreg.Options{Auth: upstreamreg.Htpasswd, Username: "kv-puller", Password: "kv-picked-pw-6d2b"})
	im := newImage(t, 181, "amd64", 8<<10)
	seedImage(t, up, "library/app", "v1", im)
	kv := kvfixture.Start(t, kvfixture.Options{PageSize: 2, Vaults: []string{"mykeyvault"},
		Secrets: map[string]string{"usernamesecret": up.Username, "passwordsecret": up.Password, "old-password": "retired-pw-0c4e",
			"api-key": "unrelated-key-93ab", "tls-cert": "unrelated-cert-51f0"},
		Disabled: map[string]bool{"old-password": true},
		Readers:  map[string]bool{"system-assigned": true}})
	a := &arca{arcaproc.Start(t, arcaproc.Options{Bin: arcaBin, Args: []string{"--insecure-upstream", up.Host},
		Env: append([]string{"ARCA_ADMIN_TOKEN=" + ptAdminToken}, kvArcaEnv(iss, kv)...)})}
	base := a.URL()
	b := browser(t)
	C, W, K := chromedp.Click[chromedp.CSS], chromedp.WaitVisible[chromedp.CSS], chromedp.SendKeys[chromedp.CSS]
	b.do("sign in", signIn(base))

	b.do("list the vault's secrets", chromedp.Navigate(base+"/portal/credentials/new"), W(css("#name")),
		K(css("#name"), "kv-picked"), K(css("#loginServer"), up.Host),
		C(css("#source-keyvault")), W(css("#vault")), K(css("#vault"), "MyKeyvault"),
		// Enter in the vault field lists (the page's script).
		follow(chromedp.KeyEvent(kb.Enter)), W(css("select#usernameSecret")))
	options := get(b, "options", chromedp.Evaluate[[]string](`[...document.querySelectorAll("#passwordSecret option")].map(o => o.value)`))
	if got := strings.Join(options, " "); got != " api-key passwordsecret tls-cert usernamesecret" {
		t.Fatalf("password secret options %q, want the enabled secrets (old-password is disabled) after an empty choice", got)
	}
	if pages := kv.Lists(); pages != 3 {
		t.Errorf("the vault answered %d list pages, want 3 (5 secrets, 2 a page)", pages)
	}
	if st := b.text("#kv-list-status"); !strings.Contains(st, "4 enabled secrets in MyKeyvault") {
		t.Errorf("listing status %q", st)
	}
	if v := get(b, "name kept", chromedp.Value(css("#name"))); v != "kv-picked" {
		t.Errorf("after listing the name field holds %q", v)
	}
	b.do("pick the secrets", choose("#usernameSecret", "usernamesecret"), choose("#passwordSecret", "passwordsecret"),
		b.shot("15-key-vault"), follow(C(css("button.primary"))), W(css(".notice")))
	if note := b.text(".notice"); !strings.Contains(note, "kv-picked created") {
		t.Fatalf("notice %q", note)
	}
	st, msg, _ := credentialSetHealth(t, a.cli(t, "credential-set", "show", "-r", "default", "-n", "kv-picked"))
	if st != "Healthy" {
		t.Fatalf("picked credential set: %s %q", st, msg)
	}
	uris := a.cli(t, "credential-set", "show", "-r", "default", "-n", "kv-picked", "--query", "authCredentials[0].[usernameSecretIdentifier, passwordSecretIdentifier]", "-o", "tsv")
	if got := strings.Join(strings.Fields(uris), " "); got != "https://MyKeyvault.vault.azure.net/secrets/usernamesecret https://MyKeyvault.vault.azure.net/secrets/passwordsecret" {
		t.Errorf("secret URIs %q", got)
	}
	a.cacheRule(t, "kv-rule", up.Host+"/library/app", "kvapp", "-c", "kv-picked")
	if got := crane(t).crane("digest", a.Ref("kvapp:v1")); got != im.Digest() {
		t.Fatalf("pull through the picked credentials: %s, want %s", got, im.Digest())
	}

	// The CLI lists the same.
	if got := strings.Fields(a.cli(t, "credential-set", "list-secrets", "-r", "default", "--key-vault", "MyKeyvault", "--query", "value[].name", "-o", "tsv")); strings.Join(got, " ") != "api-key passwordsecret tls-cert usernamesecret" {
		t.Errorf("arca credential-set list-secrets: %q", got)
	}

	// An identity granted get but not list (an access policy with
	// --secret-permissions get): the form says why the listing failed and
	// takes typed names, which it may read.
	kv.SetListers(map[string]bool{})
	b.do("list without the list permission", chromedp.Navigate(base+"/portal/credentials/new"), W(css("#name")),
		K(css("#name"), "kv-typed"), K(css("#loginServer"), up.Host),
		C(css("#source-keyvault")), W(css("#vault")), K(css("#vault"), "https://mykeyvault.vault.azure.net"),
		follow(C(css("#list-secrets"))), W(css("#kv-list-status")), b.shot("16-key-vault-not-listed"))
	if st := b.text("#kv-list-status"); !strings.Contains(st, "(KeyVaultAccessDenied)") || !strings.Contains(st, "does not have secrets list permission") ||
		!strings.Contains(st, "Type the secret names instead") {
		t.Errorf("listing error %q", st)
	}
	if role := b.attr("#kv-list-status", "role"); role != "alert" {
		t.Errorf("listing error role %q", role)
	}
	if out, err := a.tryCLI("credential-set", "list-secrets", "-r", "default", "--key-vault", "MyKeyvault"); err == nil ||
		!strings.HasPrefix(out, "arca: (KeyVaultAccessDenied) ") || strings.Contains(strings.TrimSpace(out), "\n") {
		t.Errorf("arca credential-set list-secrets without list: %v, want one line arca: (KeyVaultAccessDenied) ...:\n%s", err, out)
	}
	// Enter in another text field creates the credentials.
	b.do("type the names", W(css("input#usernameSecret")), K(css("#usernameSecret"), "usernamesecret"), K(css("#passwordSecret"), "passwordsecret"),
		follow(chromedp.KeyEvent(kb.Enter)), W(css(".notice")))
	if note := b.text(".notice"); !strings.Contains(note, "kv-typed created") {
		t.Fatalf("typed names: notice %q", note)
	}
	if st, msg, _ := credentialSetHealth(t, a.cli(t, "credential-set", "show", "-r", "default", "-n", "kv-typed")); st != "Healthy" {
		t.Fatalf("typed names: %s %q", st, msg)
	}
	// A name that is no vault's: refused before any request to a vault.
	lists := kv.Lists()
	b.do("list a bad vault name", chromedp.Navigate(base+"/portal/credentials/new"), W(css("#name")),
		C(css("#source-keyvault")), W(css("#vault")), K(css("#vault"), "my_vault"),
		follow(C(css("#list-secrets"))), W(css("#kv-list-status")))
	if st := b.text("#kv-list-status"); !strings.Contains(st, "(InvalidKeyVault)") || kv.Lists() != lists {
		t.Errorf("bad vault name: %q after %d more list requests", st, kv.Lists()-lists)
	}
	for _, v := range []string{up.Password, "retired-pw-0c4e", "unrelated-key-93ab"} {
		if strings.Contains(a.Logs(), v) {
			t.Fatalf("the server log holds the secret value %q", v)
		}
	}
}
