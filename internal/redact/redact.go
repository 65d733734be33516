// Package redact keeps credentials out of logs and debug output.
package redact

import (
	"net/url"
	"strings"
)

// Redacted replaces the value of a credential-like query parameter.
const Redacted = "REDACTED"

// secretParams are substrings of query parameter names whose values are
// never logged (lower case): passwords, tokens, keys, signatures (the
// "sig" of a SAS URL), OAuth codes.
var secretParams = []string{"pass", "pwd", "secret", "token", "key", "sig", "auth", "credential", "code", "session"}

// Query returns raw with the values of credential-like parameters
// replaced; names and order are kept. A parameter whose name cannot be
// unescaped is redacted whole.
func Query(raw string) string {
	if raw == "" {
		return ""
	}
	parts := strings.Split(raw, "&")
	for i, p := range parts {
		k, _, hasValue := strings.Cut(p, "=")
		name, err := url.QueryUnescape(k)
		if err != nil {
			parts[i] = Redacted
			continue
		}
		if hasValue && IsSecretParam(name) {
			parts[i] = k + "=" + Redacted
		}
	}
	return strings.Join(parts, "&")
}

// IsSecretParam reports whether a query parameter's value is never shown.
func IsSecretParam(name string) bool {
	n := strings.ToLower(name)
	for _, s := range secretParams {
		if strings.Contains(n, s) {
			return true
		}
	}
	return false
}
