package auth

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"

	"github.com/arcacache/arca/internal/metadata"
)

// ExchangePath is ACR's token exchange: an identity's token (from a
// federated OIDC issuer) for a refresh token of a registry.
const ExchangePath = "/oauth2/exchange"

// ValidIssuer checks an OIDC issuer URL for a federated credential: https,
// or http on a loopback address only (a test issuer on this machine).
func ValidIssuer(issuer string) error {
	u, err := url.Parse(issuer)
	if err != nil || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("issuer %q: want an https URL with a host, no query or fragment", issuer)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		h := u.Hostname()
		if ip := net.ParseIP(h); (ip != nil && ip.IsLoopback()) || strings.EqualFold(h, "localhost") {
			return nil
		}
		return fmt.Errorf("issuer %q: http is accepted only on loopback addresses; use https", issuer)
	}
	return fmt.Errorf("issuer %q: want an https URL", issuer)
}

// federation verifies tokens of OIDC issuers named by federated
// credentials: discovery and JWKS are fetched once per issuer and kept;
// go-oidc re-reads the JWKS when a token names a key it does not have
// (the issuer rotated), and discovery is redone daily.
type federation struct {
	client *http.Client
	now    func() time.Time
	mu     sync.Mutex
	m      map[string]*issuerEntry
}

type issuerEntry struct {
	ready    chan struct{} // closed when verifier/err are set
	verifier *oidc.IDTokenVerifier
	err      error
	at       time.Time
}

const (
	discoveryMaxAge  = 24 * time.Hour
	discoveryRetryIn = 10 * time.Second
)

func newFederation(client *http.Client, now func() time.Time) *federation {
	if client == nil {
		client = &http.Client{Timeout: 15 * time.Second}
	}
	return &federation{client: client, now: now, m: map[string]*issuerEntry{}}
}

// verifier returns issuer's verifier, discovering it if needed; one
// discovery runs per issuer at a time, the others wait for it.
func (f *federation) verifier(ctx context.Context, issuer string) (*oidc.IDTokenVerifier, error) {
	f.mu.Lock()
	e, ok := f.m[issuer]
	if ok {
		select {
		case <-e.ready:
			age := f.now().Sub(e.at)
			if (e.err != nil && age > discoveryRetryIn) || age > discoveryMaxAge {
				ok = false
			}
		default:
		}
	}
	if !ok {
		e = &issuerEntry{ready: make(chan struct{})}
		f.m[issuer] = e
		go f.discover(issuer, e)
	}
	f.mu.Unlock()
	select {
	case <-e.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return e.verifier, e.err
}

func (f *federation) discover(issuer string, e *issuerEntry) {
	ctx, cancel := context.WithTimeout(oidc.ClientContext(context.Background(), f.client), 30*time.Second)
	defer cancel()
	p, err := oidc.NewProvider(ctx, issuer)
	if err != nil {
		e.err = fmt.Errorf("OIDC discovery of %s: %w", issuer, err)
	} else {
		// Audiences are matched against the federated credentials.
		e.verifier = p.VerifierContext(oidc.ClientContext(context.Background(), f.client),
			&oidc.Config{SkipClientIDCheck: true, Now: f.now, SupportedSigningAlgs: []string{"RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512", "EdDSA"}})
	}
	e.at = f.now()
	close(e.ready)
}

// unverifiedIssuer reads the iss claim of a JWT without checking it (to
// know which issuer's keys check it).
func unverifiedIssuer(token string) (string, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return "", errors.New("not a JWT")
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", errors.New("JWT payload is not base64url")
	}
	var c struct {
		Iss string `json:"iss"`
	}
	if err := json.Unmarshal(b, &c); err != nil || c.Iss == "" {
		return "", errors.New("JWT has no iss claim")
	}
	return c.Iss, nil
}

// errUntrusted is a token no federated credential accepts.
var errUntrusted = errors.New("the token matches no federated credential")

// federatedPrincipal verifies token and returns the principal id of the
// identity whose federated credential accepts it: issuer, subject and one
// audience match. want, if not empty, is the resource id of the identity
// asked for; without it a token matching several identities is refused.
func (s *Service) federatedPrincipal(ctx context.Context, token, want string) (string, error) {
	if s.identities == nil {
		return "", errUntrusted
	}
	iss, err := unverifiedIssuer(token)
	if err != nil {
		return "", fmt.Errorf("%w: %v", errUntrusted, err)
	}
	if ValidIssuer(iss) != nil {
		return "", fmt.Errorf("%w: issuer %q is not accepted", errUntrusted, iss)
	}
	fics, err := s.identities.FederatedCredentialsByIssuer(ctx, iss)
	if err != nil {
		return "", err
	}
	if len(fics) == 0 {
		return "", fmt.Errorf("%w: no federated credential trusts issuer %q", errUntrusted, iss)
	}
	v, err := s.federation.verifier(ctx, iss)
	if err != nil {
		return "", fmt.Errorf("%w: %v", errUntrusted, err)
	}
	idt, err := v.Verify(ctx, token)
	if err != nil {
		return "", fmt.Errorf("%w: %v", errUntrusted, err)
	}
	wantRG, wantName := identityIDParts(want)
	found := ""
	for _, f := range fics {
		if f.Subject != idt.Subject || !slices.ContainsFunc(idt.Audience, func(a string) bool { return slices.Contains(f.Audiences, a) }) {
			continue
		}
		if want != "" && (!strings.EqualFold(f.ResourceGroup, wantRG) || !strings.EqualFold(f.Identity, wantName)) {
			continue
		}
		u, err := s.identityOf(ctx, f)
		if errors.Is(err, metadata.ErrNotFound) {
			continue
		}
		if err != nil {
			return "", err
		}
		if found != "" && found != u.PrincipalID {
			return "", fmt.Errorf("%w: the token matches federated credentials of several identities; name the one wanted (identity=<resource id>)", errUntrusted)
		}
		found = u.PrincipalID
	}
	if found != "" {
		return found, nil
	}
	if want != "" {
		return "", fmt.Errorf("%w: no federated credential of identity %s trusts issuer %q, subject %q and audiences %q", errUntrusted, want, iss, idt.Subject, idt.Audience)
	}
	return "", fmt.Errorf("%w: no federated credential of issuer %q has subject %q and one of audiences %q", errUntrusted, iss, idt.Subject, idt.Audience)
}

// identityIDParts splits .../resourceGroups/{rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}.
func identityIDParts(id string) (rg, name string) {
	seg := strings.Split(strings.Trim(id, "/"), "/")
	for i := 0; i+1 < len(seg); i++ {
		switch {
		case strings.EqualFold(seg[i], "resourceGroups"):
			rg = seg[i+1]
		case strings.EqualFold(seg[i], "userAssignedIdentities"):
			name = seg[i+1]
		}
	}
	return rg, name
}
