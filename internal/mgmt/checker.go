package mgmt

import (
	"context"
	"strings"

	"github.com/arcacache/arca/internal/rules"
)

// CredentialChecker computes a credential set's credentialHealth: it
// resolves the two secret references and logs in to the login server.
// status is rules.Healthy or rules.Unhealthy; code and message explain an
// Unhealthy result and must never contain a secret value.
type CredentialChecker interface {
	Check(ctx context.Context, loginServer, usernameRef, passwordRef string) (status, code, message string)
}

// notChecked is the checker of a server configured without one.
type notChecked struct{}

func (notChecked) Check(context.Context, string, string, string) (string, string, string) {
	return rules.Unhealthy, "NotChecked", "The credentials were not checked: this server has no credential checker."
}

// SecretResolver resolves a secret reference to its value.
type SecretResolver interface {
	Resolve(ctx context.Context, ref string) (string, error)
}

// ResolveOnlyChecker checks that both secret references resolve to
// non-empty values. It does not log in to the login server, so Healthy
// means "the secrets are readable", not "the upstream accepts them"; the
// upstream login check replaces it once the upstream client offers one.
type ResolveOnlyChecker struct {
	Secrets SecretResolver
}

// Check implements CredentialChecker.
func (c ResolveOnlyChecker) Check(ctx context.Context, _, usernameRef, passwordRef string) (string, string, string) {
	var values []string
	for _, s := range []struct{ which, ref, code string }{
		{"username", usernameRef, "UsernameSecretNotResolved"},
		{"password", passwordRef, "PasswordSecretNotResolved"},
	} {
		v, err := c.Secrets.Resolve(ctx, s.ref)
		if err != nil {
			return rules.Unhealthy, s.code, scrub("The "+s.which+" secret could not be read: "+err.Error(), values)
		}
		if v == "" {
			return rules.Unhealthy, s.code, "The " + s.which + " secret " + s.ref + " is empty."
		}
		values = append(values, v)
	}
	return rules.Healthy, "", ""
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
