// Package oidcfixture is an OIDC issuer on loopback speaking the real
// protocol: discovery (/.well-known/openid-configuration), a JWKS, RS256
// tokens with a kid, key rotation; and, on the same server, the managed
// identity endpoint of App Service that azidentity calls when
// IDENTITY_ENDPOINT and IDENTITY_HEADER are set (GET with
// X-IDENTITY-HEADER, api-version=2019-08-01, resource, mi_res_id), which
// answers with tokens of this issuer.
package oidcfixture

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// MSIPath is the managed identity endpoint's path (IDENTITY_ENDPOINT is
// URL()+MSIPath).
const MSIPath = "/msi/token"

// Issuer is a running fixture.
type Issuer struct {
	srv    *httptest.Server
	Header string // the IDENTITY_HEADER secret the MSI endpoint wants

	mu      sync.Mutex
	keys    []key // newest last; all are published
	jwksHit int
	msiHit  int
}

type key struct {
	kid  string
	priv *rsa.PrivateKey
}

// Start runs an issuer on 127.0.0.1 until the test ends.
func Start(t testing.TB) *Issuer {
	t.Helper()
	iss := &Issuer{Header: "fixture-identity-header"}
	iss.Rotate(t)
	iss.srv = httptest.NewServer(http.HandlerFunc(iss.serve))
	t.Cleanup(iss.srv.Close)
	return iss
}

// URL is the issuer (no trailing slash).
func (i *Issuer) URL() string { return i.srv.URL }

// Rotate adds a new signing key; later tokens are signed with it.
func (i *Issuer) Rotate(t testing.TB) {
	t.Helper()
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	i.mu.Lock()
	i.keys = append(i.keys, key{kid: fmt.Sprintf("k%d", len(i.keys)+1), priv: priv})
	i.mu.Unlock()
}

// JWKSRequests is how often the JWKS was fetched.
func (i *Issuer) JWKSRequests() int {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.jwksHit
}

// MSIRequests is how often the managed identity endpoint was called.
func (i *Issuer) MSIRequests() int {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.msiHit
}

// Token signs a token with the newest key.
func (i *Issuer) Token(t testing.TB, sub, aud string, ttl time.Duration) string {
	t.Helper()
	s, err := i.sign(sub, aud, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (i *Issuer) sign(sub, aud string, ttl time.Duration) (string, error) {
	i.mu.Lock()
	k := i.keys[len(i.keys)-1]
	i.mu.Unlock()
	now := time.Now()
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{
		"iss": i.URL(), "sub": sub, "aud": aud, "iat": now.Unix(), "nbf": now.Add(-time.Minute).Unix(), "exp": now.Add(ttl).Unix(),
	})
	tok.Header["kid"] = k.kid
	return tok.SignedString(k.priv)
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func (i *Issuer) serve(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	switch r.URL.Path {
	case "/.well-known/openid-configuration":
		_ = json.NewEncoder(w).Encode(map[string]any{
			"issuer": i.URL(), "jwks_uri": i.URL() + "/jwks", "authorization_endpoint": i.URL() + "/authorize",
			"token_endpoint": i.URL() + "/token", "response_types_supported": []string{"id_token"},
			"subject_types_supported": []string{"public"}, "id_token_signing_alg_values_supported": []string{"RS256"},
		})
	case "/jwks":
		i.mu.Lock()
		i.jwksHit++
		var keys []map[string]string
		for _, k := range i.keys {
			keys = append(keys, map[string]string{"kty": "RSA", "use": "sig", "alg": "RS256", "kid": k.kid,
				"n": b64(k.priv.N.Bytes()), "e": b64(big.NewInt(int64(k.priv.E)).Bytes())})
		}
		i.mu.Unlock()
		_ = json.NewEncoder(w).Encode(map[string]any{"keys": keys})
	case MSIPath:
		i.mu.Lock()
		i.msiHit++
		i.mu.Unlock()
		q := r.URL.Query()
		if r.Header.Get("X-IDENTITY-HEADER") != i.Header || q.Get("api-version") != "2019-08-01" || q.Get("resource") == "" {
			w.WriteHeader(http.StatusBadRequest)
			_ = json.NewEncoder(w).Encode(map[string]any{"statusCode": 400, "message": "bad managed identity request"})
			return
		}
		// The subject is the identity asked for (by resource id, client
		// id or principal id), as Entra's sub is the identity's object.
		sub := firstNonEmpty(q.Get("mi_res_id"), q.Get("client_id"), q.Get("principal_id"), "system-assigned")
		const ttl = time.Hour
		tok, err := i.sign(strings.ToLower(sub), q.Get("resource"), ttl)
		if err != nil {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]string{"access_token": tok, "expires_on": strconv.FormatInt(time.Now().Add(ttl).Unix(), 10),
			"resource": q.Get("resource"), "token_type": "Bearer"})
	default:
		http.NotFound(w, r)
	}
}

func firstNonEmpty(xs ...string) string {
	for _, x := range xs {
		if x != "" {
			return x
		}
	}
	return ""
}
