package portal

import (
	"errors"
	"net/http"
	"net/url"
	"strings"

	"github.com/arcacache/arca/internal/secrets"
)

// credForm is the Create credentials form.
type credForm struct {
	Name        string
	LoginServer string
	// Source is "uri" (Enter secret URIs) or "keyvault" (Select from Key
	// Vault: vault and secret names, made into Key Vault secret URIs).
	Source                     string
	UsernameURI, PasswordURI   string
	Vault                      string
	UsernameSecret, PassSecret string
	// Listed is set once the vault's secrets were listed (List secrets):
	// Secrets are their names, for the two selects. ListError says why a
	// listing failed (the names are typed then).
	Listed, Truncated bool
	Secrets           []string
	ListError         string
	Errors            formErrors
}

func (f *credForm) parse(r *http.Request) {
	v := func(k string) string { return strings.TrimSpace(r.PostFormValue(k)) }
	f.Name, f.LoginServer, f.Source = v("name"), v("loginServer"), v("source")
	f.UsernameURI, f.PasswordURI = v("usernameUri"), v("passwordUri")
	f.Vault, f.UsernameSecret, f.PassSecret = v("vault"), v("usernameSecret"), v("passwordSecret")
}

// refs are the secret references the form names.
func (f *credForm) refs() (user, pass string) {
	if f.Source != "keyvault" {
		return f.UsernameURI, f.PasswordURI
	}
	uri := func(secret string) string {
		if f.Vault == "" || secret == "" {
			return ""
		}
		vault, err := secrets.KeyVaultURL(f.Vault)
		if err != nil {
			// Not a vault: the API refuses the reference, at the field.
			vault = "https://" + f.Vault + ".vault.azure.net"
		}
		return vault + "/secrets/" + secret
	}
	return uri(f.UsernameSecret), uri(f.PassSecret)
}

func credentialSetBody(name, loginServer, user, pass string) map[string]any {
	return map[string]any{
		"identity": map[string]string{"type": "SystemAssigned"},
		"properties": map[string]any{
			"loginServer": loginServer,
			"authCredentials": []map[string]string{{
				"name": "Credential1", "usernameSecretIdentifier": user, "passwordSecretIdentifier": pass,
			}},
		},
	}
}

type credRow struct {
	credentialSet
	Rules []string
}

// credentials serves /portal/credentials[/new | /{name}/{check,delete}].
func (h *Handler) credentials(c *ctx, seg []string) {
	switch {
	case len(seg) == 0:
		h.credList(c)
	case len(seg) == 1 && seg[0] == "new":
		h.credCreate(c)
	case len(seg) == 2 && seg[1] == "check" && c.r.Method == http.MethodPost:
		// An empty PATCH re-checks the credentials (the API checks on every write).
		if err := c.api.do(c, http.MethodPatch, "credentialSets/"+url.PathEscape(seg[0]), map[string]any{"properties": map[string]any{}}, nil); err != nil {
			h.fail(c.w, c.r, err)
			return
		}
		c.redirect("/portal/credentials", "Checked "+seg[0]+".")
	case len(seg) == 2 && seg[1] == "delete":
		h.confirmDelete(c, "credential set", "credentialSets/"+url.PathEscape(seg[0]), seg[0], "/portal/credentials")
	default:
		http.NotFound(c.w, c.r)
	}
}

func (h *Handler) credList(c *ctx) {
	sets, err := list[credentialSet](c, c.api, "credentialSets")
	if err != nil {
		h.fail(c.w, c.r, err)
		return
	}
	rs, err := list[cacheRule](c, c.api, "cacheRules")
	if err != nil {
		h.fail(c.w, c.r, err)
		return
	}
	rows := make([]credRow, 0, len(sets))
	for _, s := range sets {
		row := credRow{credentialSet: s}
		for _, r := range rs {
			if strings.EqualFold(r.CredentialSet(), s.Name) {
				row.Rules = append(row.Rules, r.Name)
			}
		}
		rows = append(rows, row)
	}
	h.render(c, http.StatusOK, "credentials", page{Title: "Credentials", Nav: "credentials", Notice: c.r.URL.Query().Get("notice"), Data: rows})
}

func (h *Handler) credCreate(c *ctx) {
	f := &credForm{Source: "uri", Errors: formErrors{}}
	const title = "Create credentials"
	if c.r.Method == http.MethodGet {
		f.LoginServer = c.r.URL.Query().Get("loginServer")
		h.render(c, http.StatusOK, "credential", page{Title: title, Nav: "credentials", Data: f})
		return
	}
	f.parse(c.r)
	if c.r.PostFormValue("action") == "list" {
		h.listSecrets(c, f)
		h.render(c, http.StatusOK, "credential", page{Title: title, Nav: "credentials", Data: f})
		return
	}
	if !checkName(f.Errors, "name", "credential set", f.Name) {
		h.render(c, http.StatusBadRequest, "credential", page{Title: title, Nav: "credentials", Data: f})
		return
	}
	user, pass := f.refs()
	err := c.api.do(c, http.MethodPut, "credentialSets/"+url.PathEscape(f.Name), credentialSetBody(f.Name, f.LoginServer, user, pass), nil)
	if err != nil {
		if !f.Errors.add(err, "") {
			h.fail(c.w, c.r, err)
			return
		}
		h.render(c, http.StatusBadRequest, "credential", page{Title: title, Nav: "credentials", Data: f})
		return
	}
	c.redirect("/portal/credentials", "Credentials "+f.Name+" created.")
}

// listSecrets fills the form's secret selects from the vault it names,
// through the management API (as the session's principal, which needs the
// access that creates credential sets), read as the identity the new set
// reads its secrets as (the server's Key Vault credential). A failure is
// shown, and the names are typed instead.
func (h *Handler) listSecrets(c *ctx, f *credForm) {
	f.Source = "keyvault"
	var out struct {
		Value []struct {
			Name string `json:"name"`
		} `json:"value"`
		Truncated bool `json:"truncated"`
	}
	err := c.api.do(c, http.MethodPost, "listKeyVaultSecrets", map[string]any{"keyVault": f.Vault, "identity": map[string]string{"type": "SystemAssigned"}}, &out)
	if err != nil {
		var ae *armError
		if !errors.As(err, &ae) {
			h.log.Error("portal: listing Key Vault secrets", "vault", f.Vault, "err", err)
			f.ListError = "The secrets could not be listed (see the server log)."
			return
		}
		f.ListError = "(" + ae.Code + ") " + ae.Message
		return
	}
	f.Listed, f.Truncated = true, out.Truncated
	for _, s := range out.Value {
		f.Secrets = append(f.Secrets, s.Name)
	}
}
