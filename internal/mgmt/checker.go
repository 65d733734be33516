package mgmt

import (
	"context"
	"strings"

	"github.com/arcacache/arca/internal/rules"
	"github.com/arcacache/arca/internal/secrets"
)

// CredentialChecker computes a credential set's credentialHealth: it
// resolves the two secret references (as the set's identity) and logs in
// to the login server. status is rules.Healthy or rules.Unhealthy; code and
// message explain an Unhealthy result and must never contain a secret value.
type CredentialChecker interface {
	Check(ctx context.Context, c rules.CredentialSet) (status, code, message string)
}

// notChecked is the checker of a server configured without one.
type notChecked struct{}

func (notChecked) Check(context.Context, rules.CredentialSet) (string, string, string) {
	return rules.Unhealthy, "NotChecked", "The credentials were not checked: this server has no credential checker."
}

// SecretResolver resolves a secret reference to its value, reading Key
// Vault references as the given identity.
type SecretResolver interface {
	ResolveAs(ctx context.Context, ref string, id secrets.KeyVaultIdentity) (string, error)
}

// ResolveOnlyChecker checks that both secret references resolve to
// non-empty values. It does not log in to the login server, so Healthy
// means "the secrets are readable", not "the upstream accepts them"; the
// upstream login check replaces it once the upstream client offers one.
type ResolveOnlyChecker struct {
	Secrets SecretResolver
}

// Check implements CredentialChecker.
func (c ResolveOnlyChecker) Check(ctx context.Context, cs rules.CredentialSet) (string, string, string) {
	var values []string
	id := secrets.UserAssigned(cs.Identity)
	for _, s := range []struct{ which, ref, code string }{
		{"username", cs.UsernameRef, "UsernameSecretNotResolved"},
		{"password", cs.PasswordRef, "PasswordSecretNotResolved"},
	} {
		v, err := c.Secrets.ResolveAs(ctx, s.ref, id)
		if err != nil {
			msg := "The " + s.which + " secret could not be read: " + oneLine(err.Error())
			if cs.Identity != "" {
				msg += " (the credential set reads its secrets as its user-assigned identity, which needs 'get' on the secret)"
			}
			return rules.Unhealthy, s.code, scrub(msg, values)
		}
		if v == "" {
			return rules.Unhealthy, s.code, "The " + s.which + " secret " + s.ref + " is empty."
		}
		values = append(values, v)
	}
	return rules.Healthy, "", ""
}

// oneLine folds a multi-line error (azidentity's carry troubleshooting
// text) into one line for credentialHealth.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// scrub removes known secret values from msg, in case a resolver's error
// quotes more than it should.
func scrub(msg string, values []string) string {
	for _, v := range values {
		if len(v) >= 3 {
			msg = strings.ReplaceAll(msg, v, "[redacted]")
		}
	}
	return msg
}
