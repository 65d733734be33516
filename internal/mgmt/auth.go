package mgmt

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
)

// AdminTokenFile is where, under the data directory, the SHA-256 of a
// generated admin token is kept. Delete it to have a new token generated.
const AdminTokenFile = "admin-token.sha256"

// AdminToken checks bearer tokens against the admin token. Only its hash
// is held, so neither memory dumps of the verifier nor the data directory
// reveal the token.
type AdminToken struct {
	hash [sha256.Size]byte
}

// NewAdminToken returns a verifier for token.
func NewAdminToken(token string) (*AdminToken, error) {
	if token == "" {
		return nil, errors.New("admin token is empty")
	}
	return &AdminToken{hash: sha256.Sum256([]byte(token))}, nil
}

// ReadAdminToken returns the verifier of the token generated at an
// earlier start (its hash is in dataDir); an fs.ErrNotExist error if there
// is none.
func ReadAdminToken(dataDir string) (*AdminToken, error) {
	return readTokenHash(filepath.Join(dataDir, AdminTokenFile))
}

// GenerateAdminToken returns a new random token and its verifier. Nothing
// is stored until StoreAdminToken.
func GenerateAdminToken() (string, *AdminToken, error) {
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", nil, fmt.Errorf("admin token: %w", err)
	}
	token := "arca_" + base64.RawURLEncoding.EncodeToString(raw)
	tok, err := NewAdminToken(token)
	return token, tok, err
}

// StoreAdminToken records tok's hash in dataDir, failing (fs.ErrExist) if
// a token is already recorded there.
func StoreAdminToken(dataDir string, tok *AdminToken) error {
	path := filepath.Join(dataDir, AdminTokenFile)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("admin token: %w", err)
	}
	_, werr := f.WriteString(hex.EncodeToString(tok.hash[:]) + "\n")
	if err := errors.Join(werr, f.Sync(), f.Close()); err != nil {
		os.Remove(path)
		return fmt.Errorf("admin token: %w", err)
	}
	return nil
}

func readTokenHash(path string) (*AdminToken, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	h, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(h) != sha256.Size {
		return nil, fmt.Errorf("admin token file %s is corrupt (delete it to generate a new token)", path)
	}
	var t AdminToken
	copy(t.hash[:], h)
	return &t, nil
}

// check verifies the request's bearer token.
func (t *AdminToken) check(r *http.Request) *apiError {
	h := r.Header.Get("Authorization")
	if h == "" {
		return &apiError{Status: http.StatusUnauthorized, Code: "AuthenticationFailed",
			Message: "Authentication failed. The 'Authorization' header is missing."}
	}
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
		return &apiError{Status: http.StatusUnauthorized, Code: "AuthenticationFailed",
			Message: "Authentication failed. The 'Authorization' header is provided in an invalid format: use 'Bearer <admin token>'."}
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(token)))
	if subtle.ConstantTimeCompare(sum[:], t.hash[:]) != 1 {
		return &apiError{Status: http.StatusUnauthorized, Code: "InvalidAuthenticationToken",
			Message: "The access token is invalid: it is not this server's admin token."}
	}
	return nil
}
