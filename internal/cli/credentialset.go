package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/spf13/cobra"

	"github.com/arcacache/arca/internal/secrets"
)

// credentialSetKeys are fields az's credential set model always prints.
var credentialSetKeys = []string{"identity"}

// credentialName is the only credential name the API knows.
const credentialName = "Credential1"

type (
	authCredential struct {
		Name                     string `json:"name"`
		UsernameSecretIdentifier string `json:"usernameSecretIdentifier"`
		PasswordSecretIdentifier string `json:"passwordSecretIdentifier"`
	}
	credSetBody struct {
		Properties struct {
			LoginServer     string           `json:"loginServer,omitempty"`
			AuthCredentials []authCredential `json:"authCredentials"`
		} `json:"properties"`
		Identity *identityBody `json:"identity,omitempty"`
	}
	existingCredSet struct {
		Properties struct {
			LoginServer     string           `json:"loginServer"`
			AuthCredentials []authCredential `json:"authCredentials"`
		} `json:"properties"`
	}
)

func newCredentialSetCmd(env Env) *cobra.Command {
	o := newClientOpts(env)
	cmd := &cobra.Command{
		Use:   "credential-set",
		Short: "Manage credential sets (az acr credential-set)",
		Long: `Manage credential sets: the upstream login server and references to the
secrets holding its username and password. Only references are stored; the
server resolves them when it logs in upstream. Accepted references:

  https://<vault>.vault.azure.net/secrets/<name>[/<version>]  Azure Key Vault
  vault://<mount>/<path>#<key>[?version=N]                    Vault / OpenBao KV v2
  file:///run/secrets/<name>                                  a file on the server
  env://<NAME>                                                the server's environment`,
	}
	o.addFlags(cmd.PersistentFlags())
	cmd.AddCommand(newCredSetCreateCmd(o), newCredSetUpdateCmd(o), newCredSetShowCmd(o),
		newCredSetListCmd(o), newCredSetDeleteCmd(o))
	return cmd
}

func (s *session) credSetPath(ctx context.Context, t target) (string, error) {
	base, err := s.registryPath(ctx, t.registry, t.rg)
	if err != nil {
		return "", err
	}
	p := base + "/credentialSets"
	if t.name != "" {
		p += "/" + pathEscape(t.name)
	}
	return p, nil
}

func (s *session) printCredSet(raw json.RawMessage) error {
	if raw == nil {
		return nil
	}
	m, err := decodeResource(raw, credentialSetKeys...)
	if err != nil {
		return err
	}
	s.out.table = credSetTable
	return s.out.print(m)
}

// credSetTable picks the columns of -o table.
func credSetTable(v any) (any, map[string]int) {
	cols := []string{"name", "loginServer", "health", "provisioningState", "creationDate"}
	order := map[string]int{}
	for i, c := range cols {
		order[c] = i
	}
	row := func(x any) any {
		m, ok := x.(map[string]any)
		if !ok {
			return x
		}
		r := map[string]any{}
		for _, c := range cols {
			if v, ok := m[c]; ok {
				r[c] = v
			}
		}
		if creds, ok := m["authCredentials"].([]any); ok && len(creds) > 0 {
			if c0, ok := creds[0].(map[string]any); ok {
				if h, ok := c0["credentialHealth"].(map[string]any); ok {
					r["health"] = h["status"]
				}
			}
		}
		return r
	}
	if list, ok := v.([]any); ok {
		out := make([]any, len(list))
		for i, x := range list {
			out[i] = row(x)
		}
		return out, order
	}
	return row(v), order
}

// checkSecretRef validates a secret reference client-side. The message
// never quotes text that is not a reference (it may be a pasted secret).
func checkSecretRef(flag, ref string) error {
	if err := secrets.Validate(ref); err != nil {
		return fmt.Errorf("argument %s: %w", flag, err)
	}
	return nil
}

func newCredSetCreateCmd(o *clientOpts) *cobra.Command {
	var (
		t                 target
		login, user, pass string
	)
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Create a credential set.",
		Example: `  arca credential-set create -r MyRegistry \
    -n MyDockerHubCredSet \
    -l docker.io \
    -u https://MyKeyvault.vault.azure.net/secrets/usernamesecret \
    -p https://MyKeyvault.vault.azure.net/secrets/passwordsecret
  arca credential-set create -r MyRegistry -n ghcr -l ghcr.io \
    -u env://GHCR_USER -p vault://secret/arca/ghcr#token`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireFlags(cmd, "name", "registry", "login-server", "username-id", "password-id"); err != nil {
				return err
			}
			if err := checkSecretRef("--username-id/-u", user); err != nil {
				return err
			}
			if err := checkSecretRef("--password-id/-p", pass); err != nil {
				return err
			}
			var body credSetBody
			body.Properties.LoginServer = login
			body.Properties.AuthCredentials = []authCredential{{Name: credentialName, UsernameSecretIdentifier: user, PasswordSecretIdentifier: pass}}
			body.Identity = &identityBody{Type: "SystemAssigned"}
			return o.credSetWrite(cmd, t, http.MethodPut, body)
		},
	}
	t.addFlags(cmd.Flags(), "The name of the credential set.")
	fs := cmd.Flags()
	fs.StringVarP(&login, "login-server", "l", "", "The login server address of the upstream registry such as 'docker.io'.")
	fs.StringVarP(&user, "username-id", "u", "", "Reference to the secret holding the username for the upstream registry (Key Vault secret ID, vault://, file:// or env://).")
	fs.StringVarP(&pass, "password-id", "p", "", "Reference to the secret holding the password for the upstream registry (Key Vault secret ID, vault://, file:// or env://).")
	return cmd
}

// credSetWrite sends a PUT or PATCH and prints the result.
func (o *clientOpts) credSetWrite(cmd *cobra.Command, t target, method string, body credSetBody) error {
	s, err := o.connect()
	if err != nil {
		return err
	}
	ctx, cancel := o.context(cmd)
	defer cancel()
	path, err := s.credSetPath(ctx, t)
	if err != nil {
		return err
	}
	raw, err := s.call(ctx, method, withAPIVersion(path), body)
	if err != nil {
		return err
	}
	return s.printCredSet(raw)
}

func newCredSetUpdateCmd(o *clientOpts) *cobra.Command {
	var (
		t          target
		user, pass string
	)
	cmd := &cobra.Command{
		Use:     "update",
		Short:   "Update the username or password secret reference of a credential set.",
		Example: `  arca credential-set update -r MyRegistry -n MyDockerHubCredSet -p https://MyKeyvault.vault.azure.net/secrets/newsecretname`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireFlags(cmd, "name", "registry"); err != nil {
				return err
			}
			if user == "" && pass == "" {
				return errors.New("You must update either the username secret ID, password secret ID, or both.")
			}
			for flag, ref := range map[string]string{"--username-id/-u": user, "--password-id/-p": pass} {
				if ref != "" {
					if err := checkSecretRef(flag, ref); err != nil {
						return err
					}
				}
			}
			return o.credSetUpdate(cmd, t, user, pass)
		},
	}
	t.addFlags(cmd.Flags(), "The name of the credential set.")
	cmd.Flags().StringVarP(&user, "username-id", "u", "", "Reference to the secret holding the username for the upstream registry.")
	cmd.Flags().StringVarP(&pass, "password-id", "p", "", "Reference to the secret holding the password for the upstream registry.")
	return cmd
}

// credSetUpdate GETs the set, fills the reference not given from it, and
// PATCHes authCredentials, as az does.
func (o *clientOpts) credSetUpdate(cmd *cobra.Command, t target, user, pass string) error {
	s, err := o.connect()
	if err != nil {
		return err
	}
	ctx, cancel := o.context(cmd)
	defer cancel()
	path, err := s.credSetPath(ctx, t)
	if err != nil {
		return err
	}
	raw, err := s.call(ctx, http.MethodGet, withAPIVersion(path), nil)
	if err != nil {
		return err
	}
	var cur existingCredSet
	if err := json.Unmarshal(raw, &cur); err != nil {
		return fmt.Errorf("reading credential set %s: %w", t.name, err)
	}
	if len(cur.Properties.AuthCredentials) > 0 {
		user = firstNonEmpty(user, cur.Properties.AuthCredentials[0].UsernameSecretIdentifier)
		pass = firstNonEmpty(pass, cur.Properties.AuthCredentials[0].PasswordSecretIdentifier)
	}
	var body credSetBody
	body.Properties.AuthCredentials = []authCredential{{Name: credentialName, UsernameSecretIdentifier: user, PasswordSecretIdentifier: pass}}
	raw, err = s.call(ctx, http.MethodPatch, withAPIVersion(path), body)
	if err != nil {
		return err
	}
	return s.printCredSet(raw)
}

func newCredSetShowCmd(o *clientOpts) *cobra.Command {
	var t target
	cmd := &cobra.Command{
		Use:   "show",
		Short: "Show a credential set.",
		Example: `  arca credential-set show -r MyRegistry -n MyDockerHubCredSet
  arca credential-set show -n MyDockerHubCredSet -r MyRegistry --query 'identity.principalId' -o tsv`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireFlags(cmd, "name", "registry"); err != nil {
				return err
			}
			return o.credSetRead(cmd, t)
		},
	}
	t.addFlags(cmd.Flags(), "The name of the credential set.")
	return cmd
}

func (o *clientOpts) credSetRead(cmd *cobra.Command, t target) error {
	s, err := o.connect()
	if err != nil {
		return err
	}
	ctx, cancel := o.context(cmd)
	defer cancel()
	path, err := s.credSetPath(ctx, t)
	if err != nil {
		return err
	}
	if t.name == "" {
		items, err := s.list(ctx, withAPIVersion(path))
		if err != nil {
			return err
		}
		return s.printList(items, credSetTable, credentialSetKeys...)
	}
	raw, err := s.call(ctx, http.MethodGet, withAPIVersion(path), nil)
	if err != nil {
		return err
	}
	return s.printCredSet(raw)
}

func newCredSetListCmd(o *clientOpts) *cobra.Command {
	var t target
	cmd := &cobra.Command{
		Use:     "list",
		Short:   "List the credential sets in a registry.",
		Example: `  arca credential-set list -r MyRegistry`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireFlags(cmd, "registry"); err != nil {
				return err
			}
			return o.credSetRead(cmd, t)
		},
	}
	t.addFlags(cmd.Flags(), "")
	return cmd
}

func newCredSetDeleteCmd(o *clientOpts) *cobra.Command {
	var (
		t   target
		yes bool
	)
	cmd := &cobra.Command{
		Use:   "delete",
		Short: "Delete a credential set.",
		Long:  "Delete a credential set. A set still used by a cache rule cannot be deleted. Asks for confirmation on stdin unless --yes is given.",
		Example: `  arca credential-set delete -r MyRegistry -n MyDockerHubCredSet
  arca credential-set delete -r MyRegistry -n MyDockerHubCredSet --yes`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireFlags(cmd, "name", "registry"); err != nil {
				return err
			}
			s, err := o.connect()
			if err != nil {
				return err
			}
			if err := confirm(o.env, "Are you sure you want to perform this operation?", yes); err != nil {
				return err
			}
			ctx, cancel := o.context(cmd)
			defer cancel()
			path, err := s.credSetPath(ctx, t)
			if err != nil {
				return err
			}
			_, err = s.call(ctx, http.MethodDelete, withAPIVersion(path), nil)
			return err
		},
	}
	t.addFlags(cmd.Flags(), "The name of the credential set.")
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "Do not prompt for confirmation.")
	return cmd
}
