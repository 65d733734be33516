package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

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
		Identity *struct {
			UserAssignedIdentities map[string]json.RawMessage `json:"userAssignedIdentities"`
		} `json:"identity"`
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
		newCredSetListCmd(o), newCredSetDeleteCmd(o), newCredSetListSecretsCmd(o))
	return cmd
}

// credSetTable picks the columns of -o table.
var credSetTable = columnTable([]string{"name", "loginServer", "health", "provisioningState", "creationDate"},
	func(m, r map[string]any) {
		if creds, ok := m["authCredentials"].([]any); ok && len(creds) > 0 {
			if c0, ok := creds[0].(map[string]any); ok {
				if h, ok := c0["credentialHealth"].(map[string]any); ok {
					r["health"] = h["status"]
				}
			}
		}
	})

// checkSecretRef validates a secret reference client-side. The message
// never quotes text that is not a reference (it may be a pasted secret).
func checkSecretRef(flag, ref string) error {
	if err := secrets.Validate(ref); err != nil {
		return fmt.Errorf("argument %s: %w", flag, err)
	}
	return nil
}

// systemIdentity is the --identity value that selects the set's
// system-assigned identity (the server's Key Vault credential), spelled
// as az spells it for --assign-identity.
const systemIdentity = "[system]"

// credSetIdentity builds the identity block of --identity: the
// user-assigned identity that reads the set's Key Vault secrets, or
// [system].
func credSetIdentity(id string) (*identityBody, error) {
	if id == "" || strings.EqualFold(id, systemIdentity) {
		return &identityBody{Type: "SystemAssigned"}, nil
	}
	return userAssigned(id)
}

const credSetIdentityUsage = "Resource ID of the user-assigned managed identity that reads the Key Vault secrets " +
	"(it needs 'get' on them), or [system] for the server's Key Vault credential. arca extension."

func newCredSetCreateCmd(o *clientOpts) *cobra.Command {
	var (
		t                           target
		login, user, pass, identity string
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
    -u env://GHCR_USER -p vault://secret/arca/ghcr#token
  arca credential-set create -r MyRegistry -n hub -l docker.io \
    -u https://MyKeyvault.vault.azure.net/secrets/usernamesecret \
    -p https://MyKeyvault.vault.azure.net/secrets/passwordsecret \
    --identity /subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.ManagedIdentity/userAssignedIdentities/KVReader`,
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
			id, err := credSetIdentity(identity)
			if err != nil {
				return err
			}
			body.Identity = id
			return o.writeResource(cmd, t, credSetKind, http.MethodPut, body)
		},
	}
	t.addFlags(cmd.Flags(), "The name of the credential set.")
	fs := cmd.Flags()
	fs.StringVarP(&login, "login-server", "l", "", "The login server address of the upstream registry such as 'docker.io'.")
	fs.StringVarP(&user, "username-id", "u", "", "Reference to the secret holding the username for the upstream registry (Key Vault secret ID, vault://, file:// or env://).")
	fs.StringVarP(&pass, "password-id", "p", "", "Reference to the secret holding the password for the upstream registry (Key Vault secret ID, vault://, file:// or env://).")
	fs.StringVar(&identity, "identity", "", credSetIdentityUsage)
	return cmd
}

func newCredSetUpdateCmd(o *clientOpts) *cobra.Command {
	var (
		t                    target
		user, pass, identity string
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
			if user == "" && pass == "" && identity == "" {
				return errors.New("You must update either the username secret ID, password secret ID, or both.")
			}
			for flag, ref := range map[string]string{"--username-id/-u": user, "--password-id/-p": pass} {
				if ref != "" {
					if err := checkSecretRef(flag, ref); err != nil {
						return err
					}
				}
			}
			var id *identityBody
			if identity != "" {
				var err error
				if id, err = credSetIdentity(identity); err != nil {
					return err
				}
			}
			return o.credSetUpdate(cmd, t, user, pass, id)
		},
	}
	t.addFlags(cmd.Flags(), "The name of the credential set.")
	cmd.Flags().StringVarP(&user, "username-id", "u", "", "Reference to the secret holding the username for the upstream registry.")
	cmd.Flags().StringVarP(&pass, "password-id", "p", "", "Reference to the secret holding the password for the upstream registry.")
	cmd.Flags().StringVar(&identity, "identity", "", credSetIdentityUsage)
	return cmd
}

// credSetUpdate GETs the set, fills the reference not given from it, and
// PATCHes authCredentials, as az does, and the identity when id is set.
func (o *clientOpts) credSetUpdate(cmd *cobra.Command, t target, user, pass string, id *identityBody) error {
	return o.onResource(cmd, t, credSetKind, func(ctx context.Context, s *session, _, path string) error {
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
		body.Identity = id
		raw, err = s.call(ctx, http.MethodPatch, withAPIVersion(path), body)
		if err != nil {
			return err
		}
		return s.printResource(raw, credSetKind)
	})
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
			return o.showResource(cmd, t, credSetKind)
		},
	}
	t.addFlags(cmd.Flags(), "The name of the credential set.")
	return cmd
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
			return o.showResource(cmd, t, credSetKind)
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
			return o.deleteResource(cmd, t, credSetKind, yes)
		},
	}
	t.addFlags(cmd.Flags(), "The name of the credential set.")
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "Do not prompt for confirmation.")
	return cmd
}

// secretsTable picks the columns of list-secrets -o table.
func secretsTable(v any) (any, map[string]int) {
	m, _ := v.(map[string]any)
	list, _ := m["value"].([]any)
	rows := make([]map[string]any, 0, len(list))
	for _, it := range list {
		if s, ok := it.(map[string]any); ok {
			rows = append(rows, map[string]any{"Name": s["name"], "SecretIdentifier": s["secretIdentifier"]})
		}
	}
	return rows, map[string]int{"NAME": 0, "SECRET IDENTIFIER": 1}
}

func newCredSetListSecretsCmd(o *clientOpts) *cobra.Command {
	var t target
	var vault, identity string
	cmd := &cobra.Command{
		Use:   "list-secrets",
		Short: "List a key vault's secrets (names, never values) as a credential set would read them. arca extension.",
		Long: `List the enabled secrets of a key vault, names and version-less secret IDs
only, read by the server as the identity a credential set reads its secrets
as (--identity; default the server's Key Vault credential), which needs
Key Vault's list permission. The vault is named: arca cannot list key
vaults (that needs Azure Resource Manager).`,
		Example: `  arca credential-set list-secrets -r MyRegistry --key-vault MyKeyvault -o table
  arca credential-set list-secrets -r MyRegistry --key-vault https://mykeyvault.vault.azure.cn --query 'value[].name' -o tsv`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireFlags(cmd, "registry", "key-vault"); err != nil {
				return err
			}
			id, err := credSetIdentity(identity)
			if err != nil {
				return err
			}
			body := map[string]any{"keyVault": vault, "identity": id}
			return o.onPath(cmd, registryAt(t.registry, t.rg), func(ctx context.Context, s *session, path string) error {
				raw, err := s.call(ctx, http.MethodPost, withAPIVersion(path+"/listKeyVaultSecrets"), body)
				if err != nil {
					return unsupported(err, "credential-set list-secrets")
				}
				s.out.table = secretsTable
				return s.printRaw(raw)
			})
		},
	}
	t.addFlags(cmd.Flags(), "")
	cmd.Flags().StringVar(&vault, "key-vault", "", "The key vault: its name (public Azure cloud) or its URL.")
	cmd.Flags().StringVar(&identity, "identity", "", "Resource ID of the user-assigned managed identity to list as, or [system] for the server's Key Vault credential (the default).")
	return cmd
}
