package identity

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
)

// ACRScope is the Entra ID scope of tokens for ACR's exchange.
const ACRScope = "https://containerregistry.azure.net/.default"

// FromEnvironment picks how this process proves an identity, by the
// workload identity conventions:
//   - AZURE_FEDERATED_TOKEN_FILE without AZURE_AUTHORITY_HOST: the file's
//     token (a projected service-account token, any OIDC token) is sent to
//     the upstream's exchange as it is; an arca upstream accepts it through
//     a federated credential of the identity.
//   - AZURE_FEDERATED_TOKEN_FILE with AZURE_CLIENT_ID, AZURE_TENANT_ID and
//     AZURE_AUTHORITY_HOST: azidentity's workload identity credential
//     trades the file's token at Microsoft Entra ID for an ACR token.
//   - otherwise: azidentity's managed identity credential for the rule's
//     identity (IMDS, or App Service's IDENTITY_ENDPOINT/IDENTITY_HEADER).
func FromEnvironment(getenv func(string) string) Source {
	file := getenv("AZURE_FEDERATED_TOKEN_FILE")
	switch {
	case file != "" && getenv("AZURE_AUTHORITY_HOST") == "":
		return &FileSource{Path: file}
	case file != "":
		return &azureSource{newCred: func(string) (azcore.TokenCredential, error) {
			return azidentity.NewWorkloadIdentityCredential(nil)
		}, shared: true}
	}
	return &azureSource{newCred: func(id string) (azcore.TokenCredential, error) {
		return azidentity.NewManagedIdentityCredential(&azidentity.ManagedIdentityCredentialOptions{ID: azidentity.ResourceID(id)})
	}}
}

// FileSource reads a federated token from a file, re-reading it once the
// token it read is within a minute of expiring (kubelet rotates the file).
type FileSource struct {
	Path string
	mu   sync.Mutex
	tok  string
	exp  time.Time
}

// Token returns the file's token (the same for every identity: the
// upstream maps it to the identity whose federated credential matches).
func (f *FileSource) Token(_ context.Context, _ string) (string, time.Time, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.tok != "" && (f.exp.IsZero() || time.Now().Before(f.exp.Add(-expirySlack))) {
		return f.tok, f.exp, nil
	}
	b, err := os.ReadFile(f.Path)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("federated token file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", time.Time{}, fmt.Errorf("federated token file %s is empty", f.Path)
	}
	exp := jwtExpiry(tok)
	if !exp.IsZero() && !time.Now().Before(exp) {
		return "", time.Time{}, fmt.Errorf("the token in %s expired at %s", f.Path, exp.UTC().Format(time.RFC3339))
	}
	f.tok, f.exp = tok, exp
	return tok, exp, nil
}

// azureSource gets ACR-scoped Entra ID tokens through azidentity (which
// caches them until shortly before they expire).
type azureSource struct {
	newCred func(identityID string) (azcore.TokenCredential, error)
	shared  bool // one credential for every identity (workload identity)
	mu      sync.Mutex
	creds   map[string]azcore.TokenCredential
}

func (a *azureSource) Token(ctx context.Context, identityID string) (string, time.Time, error) {
	k := strings.ToLower(identityID)
	if a.shared {
		k = ""
	}
	a.mu.Lock()
	if a.creds == nil {
		a.creds = map[string]azcore.TokenCredential{}
	}
	cred, ok := a.creds[k]
	if !ok {
		var err error
		if cred, err = a.newCred(identityID); err != nil {
			a.mu.Unlock()
			return "", time.Time{}, err
		}
		a.creds[k] = cred
	}
	a.mu.Unlock()
	t, err := cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{ACRScope}})
	if err != nil {
		var fail *azidentity.AuthenticationFailedError
		if errors.As(err, &fail) {
			return "", time.Time{}, fmt.Errorf("microsoft entra id refused: %w", err)
		}
		return "", time.Time{}, err
	}
	return t.Token, t.ExpiresOn, nil
}
