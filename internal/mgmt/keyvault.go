package mgmt

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/arcacache/arca/internal/secrets"
)

// KeyVaultLister lists a key vault's secrets (names, never values) as an
// Azure identity: the identity a credential set reads its secrets as.
type KeyVaultLister interface {
	ListKeyVaultSecrets(ctx context.Context, vault string, id secrets.KeyVaultIdentity, max int) ([]secrets.SecretName, bool, error)
}

// maxListedSecrets bounds one listing (Key Vault pages hold 25 secrets:
// 40 requests at most).
const maxListedSecrets = 1000

// listKeyVaultSecrets is POST registries/R/listKeyVaultSecrets, an arca
// action for the portal's Key Vault picker: body {"keyVault": name or
// URL, "identity": a credential set's identity block (optional)}; answer
// {"keyVaultUri", "value": [{"name", "secretIdentifier"}], "truncated"}
// with the vault's enabled secrets, read as that identity. It needs the
// access that creates credential sets (a POST: write). Listing vaults
// themselves would need Azure Resource Manager, which arca does not use.
func (h *Handler) listKeyVaultSecrets(w http.ResponseWriter, req *request) error {
	if req.r.Method != http.MethodPost {
		return errMethod(req.r)
	}
	if h.opts.KeyVault == nil {
		return &apiError{Status: http.StatusNotImplemented, Code: "NotImplemented", Message: "This server cannot list Key Vault secrets."}
	}
	var body struct {
		KeyVault string            `json:"keyVault"`
		Identity opt[identityJSON] `json:"identity"`
	}
	if err := readBody(req.r, &body); err != nil {
		return err
	}
	if body.KeyVault == "" {
		return errBadRequest("InvalidKeyVault", "keyVault is required: the vault's name (MyKeyvault) or URL (https://mykeyvault.vault.azure.net).")
	}
	vaultURL, err := secrets.KeyVaultURL(body.KeyVault)
	if err != nil {
		return errBadRequest("InvalidKeyVault", err.Error())
	}
	identity, err := credentialSetIdentity(body.Identity)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(req.r.Context(), h.opts.CheckTimeout)
	defer cancel()
	names, truncated, err := h.opts.KeyVault.ListKeyVaultSecrets(ctx, vaultURL, secrets.UserAssigned(identity), maxListedSecrets)
	if err != nil {
		return keyVaultError(err, identity)
	}
	value := make([]map[string]string, 0, len(names))
	for _, n := range names {
		value = append(value, map[string]string{"name": n.Name, "secretIdentifier": n.URI})
	}
	writeJSON(w, http.StatusOK, map[string]any{"keyVaultUri": vaultURL, "value": value, "truncated": truncated})
	return nil
}

// keyVaultError is the ARM error for a failed listing: the vault's or the
// identity's failure is a failed dependency (424), with a code for each
// kind and the vault's own message (which holds no secret value).
func keyVaultError(err error, identity string) error {
	who := "arca's Key Vault credential"
	if identity != "" {
		who = "the user-assigned identity " + identity
	}
	code, hint := "KeyVaultRequestFailed", ""
	switch {
	case errors.Is(err, secrets.ErrVaultForbidden):
		code, hint = "KeyVaultAccessDenied", " Grant "+who+" the list permission on the vault's secrets (the Key Vault Secrets User role, or an access policy with get and list)."
	case errors.Is(err, secrets.ErrVaultNotFound):
		code, hint = "KeyVaultNotFound", " Check the vault's name, and its cloud (give the vault's URL for a cloud other than the public one)."
	case errors.Is(err, secrets.ErrIdentityUnavailable):
		code, hint = "KeyVaultIdentityUnavailable", " "+who+" could not get a token for Key Vault: configure the server's Azure identity (docs/identity.md)."
	}
	return &apiError{Status: http.StatusFailedDependency, Code: code, Message: "The secrets could not be listed: " + strings.TrimSuffix(oneLine(err.Error()), ".") + "." + hint}
}
