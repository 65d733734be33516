package secrets

import (
	"errors"
	"fmt"
	"net/url"
	"path"
	"regexp"
	"strings"
)

// Kind is the secret store a reference points into.
type Kind string

const (
	KindKeyVault Kind = "keyvault" // https://<vault>.vault.azure.net/secrets/<name>[/<version>]
	KindVault    Kind = "vault"    // vault://<mount>/<path>#<key>[?version=N]
	KindFile     Kind = "file"     // file:///absolute/path
	KindEnv      Kind = "env"      // env://NAME
)

// keyVaultSuffixes are the DNS suffixes of Key Vault in the Azure clouds.
var keyVaultSuffixes = []string{
	".vault.azure.net",         // public
	".vault.azure.cn",          // China
	".vault.usgovcloudapi.net", // US Government
	".vault.microsoftazure.de", // Germany (legacy)
}

var (
	// Key Vault: vault names are 3-24 alphanumerics and dashes; secret names 1-127.
	kvVaultNameRe  = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9-]{1,22}[a-zA-Z0-9]$`)
	kvSecretNameRe = regexp.MustCompile(`^[0-9a-zA-Z-]{1,127}$`)
	kvVersionRe    = regexp.MustCompile(`^[0-9a-zA-Z]{1,64}$`)
	envNameRe      = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	vaultSegRe     = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)
	vaultVersionRe = regexp.MustCompile(`^[1-9][0-9]{0,9}$`)
)

// Ref is a parsed secret reference. It never holds a secret value.
type Ref struct {
	Kind Kind
	Raw  string

	// Key Vault
	VaultURL string // https://<vault>.vault.azure.net
	Name     string // secret name (Key Vault) or environment variable name
	Version  string // Key Vault version, or KV v2 version ("" = latest)

	// HashiCorp Vault / OpenBao KV v2
	Mount string
	Path  string
	Key   string

	// File
	File string
}

// ErrInvalidRef is wrapped by every syntax error from Parse and Validate.
var ErrInvalidRef = errors.New("invalid secret reference")

// Validate checks the syntax of a secret reference without resolving it.
func Validate(ref string) error {
	_, err := Parse(ref)
	return err
}

// Parse parses a secret reference. Accepted forms:
//
//	https://<vault>.vault.azure.net/secrets/<name>[/<version>]  Azure Key Vault
//	vault://<mount>/<path>#<key>[?version=N]                     Vault / OpenBao KV v2
//	file:///absolute/path                                        file contents
//	env://NAME                                                   environment variable
func Parse(ref string) (Ref, error) {
	// Text that is not a reference may be a secret pasted by mistake:
	// those errors do not quote it.
	if strings.TrimSpace(ref) != ref || ref == "" {
		return Ref{}, fmt.Errorf("%w: must be a non-empty URI without surrounding spaces", ErrInvalidRef)
	}
	scheme, _, ok := strings.Cut(ref, "://")
	if !ok {
		return Ref{}, fmt.Errorf("%w: expected https://<vault>.vault.azure.net/secrets/<name>, vault://<mount>/<path>#<key>, file:///<path> or env://<NAME>", ErrInvalidRef)
	}
	switch strings.ToLower(scheme) {
	case "https":
		return parseKeyVault(ref)
	case "vault", "openbao", "bao":
		return parseVault(ref)
	case "file":
		return parseFile(ref)
	case "env":
		return parseEnv(ref)
	}
	return Ref{}, fmt.Errorf("%w: unsupported scheme (use https for Azure Key Vault, vault, file or env)", ErrInvalidRef)
}

func invalid(ref, why string) error {
	return fmt.Errorf("%w %q: %s", ErrInvalidRef, ref, why)
}

func parseKeyVault(ref string) (Ref, error) {
	u, err := url.Parse(ref)
	if err != nil {
		return Ref{}, invalid(ref, "not a URL")
	}
	host, why := keyVaultHost(u)
	if why != "" {
		return Ref{}, invalid(ref, why)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return Ref{}, invalid(ref, "Key Vault secret URI takes no query or fragment")
	}
	parts := strings.Split(strings.TrimSuffix(u.EscapedPath(), "/"), "/")
	if len(parts) < 3 || len(parts) > 4 || parts[0] != "" || parts[1] != "secrets" {
		return Ref{}, invalid(ref, "path must be /secrets/<name>[/<version>]")
	}
	r := Ref{Kind: KindKeyVault, Raw: ref, VaultURL: "https://" + host, Name: parts[2]}
	if !kvSecretNameRe.MatchString(r.Name) {
		return Ref{}, invalid(ref, "secret name must be 1-127 letters, digits and dashes")
	}
	if len(parts) == 4 {
		r.Version = parts[3]
		if !kvVersionRe.MatchString(r.Version) {
			return Ref{}, invalid(ref, "secret version must be alphanumeric")
		}
	}
	return r, nil
}

// keyVaultHost is the lower-case host of a Key Vault URL, or why it is
// not one.
func keyVaultHost(u *url.URL) (host, why string) {
	host = strings.ToLower(u.Hostname())
	suffix := ""
	for _, s := range keyVaultSuffixes {
		if strings.HasSuffix(host, s) {
			suffix = s
		}
	}
	if suffix == "" || u.Port() != "" || u.User != nil {
		return "", "host must be <vault>.vault.azure.net (or another Azure cloud's Key Vault domain)"
	}
	if !kvVaultNameRe.MatchString(strings.TrimSuffix(host, suffix)) {
		return "", "vault name must be 3-24 letters, digits and dashes"
	}
	return host, ""
}

// KeyVaultURL is the URL of the key vault that vault names: a vault name
// (the public Azure cloud's vault, https://<name>.vault.azure.net) or a
// vault URL (any Azure cloud's, https://<name>.vault.azure.cn and so
// on). The name keeps the case it was given in; the URL has no path.
func KeyVaultURL(vault string) (string, error) {
	if !strings.Contains(vault, "://") {
		if !kvVaultNameRe.MatchString(vault) {
			return "", fmt.Errorf("%w: key vault name must be 3-24 letters, digits and dashes, starting with a letter (or give the vault's URL)", ErrInvalidRef)
		}
		return "https://" + vault + ".vault.azure.net", nil
	}
	u, err := url.Parse(vault)
	if err != nil || !strings.EqualFold(u.Scheme, "https") {
		return "", fmt.Errorf("%w: key vault URL must be https://<vault>.vault.azure.net", ErrInvalidRef)
	}
	if _, why := keyVaultHost(u); why != "" {
		return "", fmt.Errorf("%w: key vault URL %q: %s", ErrInvalidRef, vault, why)
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("%w: key vault URL %q: give the vault's URL alone, without /secrets/... or a query", ErrInvalidRef, vault)
	}
	return "https://" + u.Host, nil
}

func parseVault(ref string) (Ref, error) {
	u, err := url.Parse(ref)
	if err != nil {
		return Ref{}, invalid(ref, "not a URL")
	}
	r := Ref{Kind: KindVault, Raw: ref, Mount: u.Host, Key: u.Fragment}
	if u.User != nil || u.Port() != "" || !vaultSegRe.MatchString(r.Mount) {
		return Ref{}, invalid(ref, "expected vault://<mount>/<path>#<key>: bad mount")
	}
	r.Path = strings.Trim(u.Path, "/")
	if r.Path == "" || path.Clean(r.Path) != r.Path {
		return Ref{}, invalid(ref, "expected vault://<mount>/<path>#<key>: missing or unclean secret path")
	}
	for _, seg := range strings.Split(r.Path, "/") {
		if !vaultSegRe.MatchString(seg) || seg == "." || seg == ".." {
			return Ref{}, invalid(ref, "secret path segments may hold letters, digits, '.', '_' and '-'")
		}
	}
	if r.Key == "" {
		return Ref{}, invalid(ref, "expected vault://<mount>/<path>#<key>: missing #<key>")
	}
	q := u.Query()
	for k := range q {
		if k != "version" {
			return Ref{}, invalid(ref, fmt.Sprintf("unknown query parameter %q (only version)", k))
		}
	}
	if v := q.Get("version"); v != "" || q.Has("version") {
		if !vaultVersionRe.MatchString(v) {
			return Ref{}, invalid(ref, "version must be a positive integer")
		}
		r.Version = v
	}
	return r, nil
}

func parseFile(ref string) (Ref, error) {
	u, err := url.Parse(ref)
	if err != nil {
		return Ref{}, invalid(ref, "not a URL")
	}
	if u.Host != "" && u.Host != "localhost" {
		return Ref{}, invalid(ref, "expected file:///absolute/path (no host)")
	}
	if u.RawQuery != "" || u.Fragment != "" || !path.IsAbs(u.Path) || path.Clean(u.Path) != u.Path || u.Path == "/" {
		return Ref{}, invalid(ref, "expected file:///absolute/path (clean, absolute, no query)")
	}
	return Ref{Kind: KindFile, Raw: ref, File: u.Path}, nil
}

func parseEnv(ref string) (Ref, error) {
	name := ref[len("env://"):]
	if !envNameRe.MatchString(name) {
		return Ref{}, invalid(ref, "expected env://NAME with NAME of letters, digits and '_'")
	}
	return Ref{Kind: KindEnv, Raw: ref, Name: name}, nil
}
