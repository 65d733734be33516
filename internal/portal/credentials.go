package portal

import (
	"net/http"
	"net/url"
	"strings"
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
	Errors                     formErrors
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
		return "https://" + f.Vault + ".vault.azure.net/secrets/" + secret
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
