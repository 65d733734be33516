package rules

import (
	"strings"
	"time"
)

// CredentialName is the only credential name ACR defines.
const CredentialName = "Credential1"

// CredentialKey names credential set name of registry wherever its use is
// accounted: the upstream token cache and Docker Hub rate-limit
// observations (read back by `credential-set show`). Registries may have
// credential sets of the same name for different upstream accounts.
func CredentialKey(registry, name string) string {
	return strings.ToLower(registry) + "/" + name
}

// Health statuses of a credential.
const (
	Healthy   = "Healthy"
	Unhealthy = "Unhealthy"
)

// CredentialSet holds references to the username and password secrets of
// an upstream's login server. It never holds secret values.
type CredentialSet struct {
	Name        string
	LoginServer string
	UsernameRef string // secret reference (Key Vault URI, vault://, file://, env://)
	PasswordRef string
	Health      Health
	// PrincipalID is the set's system-assigned identity: a UUID generated at
	// creation and kept for the set's life.
	PrincipalID string
	// Identity is the resource id of the user-assigned managed identity
	// that reads the set's Key Vault secrets; "" means the system-assigned
	// identity, which is the server's Key Vault credential.
	Identity          string
	ProvisioningState string
	CreatedAt         time.Time
	ModifiedAt        time.Time
}

// Health is the result of the last credential check.
type Health struct {
	Status       string
	ErrorCode    string
	ErrorMessage string
}

// Validate checks cs on its own; validRef checks the syntax of a secret
// reference (nil skips that check).
func (cs *CredentialSet) Validate(validRef func(string) error) error {
	if err := ValidateName("credential set", cs.Name); err != nil {
		return err
	}
	if cs.LoginServer == "" {
		return errorf(CodeInvalidLoginServer, "loginServer is required: the upstream's login server, e.g. docker.io")
	}
	if err := ValidateLoginServer(cs.LoginServer); err != nil {
		return err
	}
	for _, f := range []struct{ field, ref string }{
		{"usernameSecretIdentifier", cs.UsernameRef},
		{"passwordSecretIdentifier", cs.PasswordRef},
	} {
		if f.ref == "" {
			return errorf(CodeInvalidSecretIdentifier, "authCredentials[0].%s is required", f.field)
		}
		if validRef != nil {
			if err := validRef(f.ref); err != nil {
				return errorf(CodeInvalidSecretIdentifier, "authCredentials[0].%s: %v", f.field, err)
			}
		}
	}
	if cs.Identity != "" && !uamiRe.MatchString(cs.Identity) {
		return errorf(CodeInvalidIdentity, "Invalid user-assigned managed identity resource ID: %s (expected /subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{identityName})", cs.Identity)
	}
	return nil
}
