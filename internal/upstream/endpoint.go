package upstream

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/arcacache/arca/internal/oci"
)

// CanonicalHost is the name rate limits and metrics are keyed by: Docker
// Hub's aliases become "docker.io"; other hosts are lower-cased.
func CanonicalHost(host string) string {
	if IsDockerHub(host) {
		return "docker.io"
	}
	return strings.ToLower(host)
}

// endpoint maps a login server to the scheme and host serving its API:
// HTTPS unless the host is in Options.Insecure (see Endpoint in hosts.go).
func (c *Client) endpoint(host string) (scheme, apiHost string) {
	apiHost = strings.ToLower(Endpoint(host))
	scheme = "https"
	if c.insecure[strings.ToLower(host)] || c.insecure[apiHost] {
		scheme = "http"
	}
	return scheme, apiHost
}

// prepared is a validated request target.
type prepared struct {
	repo    Repo // Path normalized
	scheme  string
	apiHost string
}

// prepare validates r and maps it to its API endpoint.
func (c *Client) prepare(r Repo) (prepared, error) {
	if r.Host == "" {
		return prepared{}, fmt.Errorf("upstream: repository %q has no host", r.Path)
	}
	if strings.ContainsAny(r.Host, "/?#@ ") {
		return prepared{}, fmt.Errorf("upstream: invalid host %q", r.Host)
	}
	r.Path = NormalizePath(r.Host, r.Path)
	if !oci.ValidRepository(r.Path) {
		return prepared{}, fmt.Errorf("upstream: invalid repository name %q", r.Path)
	}
	if r.Creds != nil && r.CredKey == "" {
		// Tokens are cached per CredKey; "" is the anonymous partition.
		return prepared{}, fmt.Errorf("upstream: %s has credentials but no CredKey", r)
	}
	scheme, apiHost := c.endpoint(r.Host)
	return prepared{repo: r, scheme: scheme, apiHost: apiHost}, nil
}

func (p prepared) url(suffix string, q url.Values) *url.URL {
	u := &url.URL{Scheme: p.scheme, Host: p.apiHost, Path: "/v2/" + p.repo.Path + suffix}
	if len(q) > 0 {
		u.RawQuery = q.Encode()
	}
	return u
}

// checkRef validates a manifest reference and returns its digest when it
// is one.
func checkRef(ref string) (digest.Digest, error) {
	if strings.Contains(ref, ":") {
		d, err := digest.Parse(ref)
		if err != nil {
			return "", fmt.Errorf("upstream: invalid digest %q: %w", ref, err)
		}
		return d, nil
	}
	if !oci.ValidTag(ref) {
		return "", fmt.Errorf("upstream: invalid tag %q", ref)
	}
	return "", nil
}
