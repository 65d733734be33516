package upstreamreg

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// The service and issuer names the registry is configured with.
const (
	TokenService = "arca-test-registry"
	TokenIssuer  = "arca-test-token-issuer"
)

// TokenRequest is one request the token service answered.
type TokenRequest struct {
	Username string   // "" for anonymous
	Service  string   // service= parameter
	Scopes   []string // scope= parameters, split on spaces
	Status   int      // HTTP status answered
}

// tokenService speaks the Docker token protocol
// (https://distribution.github.io/distribution/spec/auth/token/) the way
// auth.docker.io does: GET <realm>?service=...&scope=... with optional basic
// auth, answered with {"token","access_token","expires_in","issued_at"}.
// Tokens are JWTs signed with ES256 and carry the signing certificate in the
// x5c header, which distribution 2.8 verifies against its rootcertbundle.
type tokenService struct {
	opts Options
	ln   net.Listener
	srv  *http.Server

	mu       sync.Mutex
	key      *ecdsa.PrivateKey
	certDER  []byte
	requests []TokenRequest
}

type resourceActions struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
}

func startTokenService(t testing.TB, o Options) *tokenService {
	t.Helper()
	s := &tokenService{opts: o}
	if err := s.rotate(); err != nil {
		t.Fatalf("upstreamreg: token signing key: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("upstreamreg: token service listen: %v", err)
	}
	s.ln = ln
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = s.srv.Serve(ln) }()
	t.Cleanup(func() { _ = s.srv.Close() })
	return s
}

// rotate makes a new signing key and self-signed certificate.
func (s *tokenService) rotate() error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "arca test token signer"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(7 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.key, s.certDER = key, der
	s.mu.Unlock()
	return nil
}

func (s *tokenService) realm() string { return "http://" + s.ln.Addr().String() + "/token" }

func (s *tokenService) rootPEM() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.certDER})
}

// mint signs a token for subject with the given access.
func (s *tokenService) mint(subject string, access []resourceActions, now time.Time) (string, error) {
	s.mu.Lock()
	key, der := s.key, s.certDER
	s.mu.Unlock()
	jti := make([]byte, 12)
	_, _ = rand.Read(jti)
	if access == nil {
		access = []resourceActions{}
	}
	claims := jwt.MapClaims{
		"iss":    TokenIssuer,
		"sub":    subject,
		"aud":    TokenService,
		"iat":    now.Unix(),
		"nbf":    now.Add(-time.Second).Unix(),
		"exp":    now.Add(s.opts.TokenTTL).Unix(),
		"jti":    base64.RawURLEncoding.EncodeToString(jti),
		"access": access,
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, claims)
	tok.Header["x5c"] = []string{base64.StdEncoding.EncodeToString(der)}
	return tok.SignedString(key)
}

func (s *tokenService) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/token" || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
		http.Error(w, "the token service answers GET /token", http.StatusNotFound)
		return
	}
	q := r.URL.Query()
	var scopes []string
	for _, sc := range q["scope"] {
		scopes = append(scopes, strings.Fields(sc)...)
	}
	user, pass, hasBasic := r.BasicAuth()
	status, body := s.answer(q.Get("service"), scopes, user, pass, hasBasic)
	s.mu.Lock()
	s.requests = append(s.requests, TokenRequest{Username: user, Service: q.Get("service"), Scopes: scopes, Status: status})
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

// answer decides what a token request gets, as auth.docker.io does: wrong
// credentials are a 401; anonymous requests get a token, with access only
// when the fixture has no account.
func (s *tokenService) answer(service string, scopes []string, user, pass string, hasBasic bool) (int, any) {
	if service != TokenService {
		return http.StatusBadRequest, map[string]string{"details": fmt.Sprintf("unknown service %q", service)}
	}
	grant := s.opts.Username == ""
	if hasBasic {
		if s.opts.Username == "" || user != s.opts.Username || pass != s.opts.Password {
			return http.StatusUnauthorized, map[string]string{"details": "incorrect username or password"}
		}
		grant = true
	}
	var access []resourceActions
	if grant {
		var err error
		if access, err = parseScopes(scopes); err != nil {
			return http.StatusBadRequest, map[string]string{"details": err.Error()}
		}
	}
	now := time.Now()
	tok, err := s.mint(user, access, now)
	if err != nil {
		return http.StatusInternalServerError, map[string]string{"details": err.Error()}
	}
	return http.StatusOK, map[string]any{
		"token":        tok,
		"access_token": tok,
		"expires_in":   int(s.opts.TokenTTL / time.Second),
		"issued_at":    now.UTC().Format(time.RFC3339Nano),
	}
}

// parseScopes parses "type:name:action,action" scopes; the name may hold
// colons (a host:port prefix), so type is before the first and actions after
// the last.
func parseScopes(scopes []string) ([]resourceActions, error) {
	var out []resourceActions
	for _, sc := range scopes {
		first, last := strings.Index(sc, ":"), strings.LastIndex(sc, ":")
		if first < 0 || first == last {
			return nil, errors.New("malformed scope " + sc)
		}
		out = append(out, resourceActions{Type: sc[:first], Name: sc[first+1 : last], Actions: strings.Split(sc[last+1:], ",")})
	}
	return out, nil
}

func (s *tokenService) log() []TokenRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]TokenRequest(nil), s.requests...)
}

// TokenRealm is the token service's realm URL ("" unless Auth is Token).
func (r *Registry) TokenRealm() string {
	if r.token == nil {
		return ""
	}
	return r.token.realm()
}

// TokenRequests counts the token requests answered so far (every status).
func (r *Registry) TokenRequests() int { return len(r.TokenLog()) }

// TokenLog returns every token request answered so far.
func (r *Registry) TokenLog() []TokenRequest {
	if r.token == nil {
		return nil
	}
	return r.token.log()
}

// RotateTokenKey replaces the token signing key and restarts the registry
// trusting only the new one: every token issued before is then rejected with
// 401, as after a token-service key rotation upstream.
func (r *Registry) RotateTokenKey(t testing.TB) {
	t.Helper()
	if r.token == nil {
		t.Fatalf("upstreamreg: RotateTokenKey needs Auth: Token")
	}
	if err := r.token.rotate(); err != nil {
		t.Fatalf("upstreamreg: rotate token key: %v", err)
	}
	r.Restart(t)
}
