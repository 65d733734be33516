package secrets

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"
)

// kvRetry is shorter than the SDK's default (3 retries from 800ms, about
// 10s for an unknown vault host): secrets are resolved on request paths
// such as upstream logins, and callers keep the previous value or report
// Unhealthy rather than wait.
var kvRetry = policy.RetryOptions{MaxRetries: 2, RetryDelay: 250 * time.Millisecond, MaxRetryDelay: 2 * time.Second}

// keyVault reads Azure Key Vault secrets through the official SDK, one
// azsecrets.Client per vault (each keeps its own challenge state).
type keyVault struct {
	opts KeyVaultOptions
	http *http.Client

	mu      sync.Mutex
	cred    azcore.TokenCredential
	clients map[string]*azsecrets.Client
}

func newKeyVault(opts KeyVaultOptions, hc *http.Client) (*keyVault, error) {
	if opts.ClientSecret != "" && (opts.TenantID == "" || opts.ClientID == "") {
		return nil, errors.New("key vault: a client secret needs a tenant ID and a client ID")
	}
	return &keyVault{opts: opts, http: hc, cred: opts.Credential, clients: map[string]*azsecrets.Client{}}, nil
}

func (k *keyVault) get(ctx context.Context, r Ref) (string, error) {
	c, err := k.client(r.VaultURL)
	if err != nil {
		return "", err
	}
	resp, err := c.GetSecret(ctx, r.Name, r.Version, nil)
	if err != nil {
		return "", describeAzureError(err)
	}
	if resp.Value == nil {
		return "", errors.New("key vault returned a secret without a value")
	}
	return *resp.Value, nil
}

func (k *keyVault) client(vaultURL string) (*azsecrets.Client, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if c, ok := k.clients[vaultURL]; ok {
		return c, nil
	}
	if k.cred == nil {
		cred, err := k.credential()
		if err != nil {
			return nil, fmt.Errorf("azure credential: %w", err)
		}
		k.cred = cred
	}
	c, err := azsecrets.NewClient(vaultURL, k.cred, &azsecrets.ClientOptions{
		ClientOptions:                        azcore.ClientOptions{Transport: k.http, Retry: kvRetry},
		DisableChallengeResourceVerification: k.opts.DisableChallengeResourceVerification,
	})
	if err != nil {
		return nil, fmt.Errorf("key vault client: %w", err)
	}
	k.clients[vaultURL] = c
	return c, nil
}

func (k *keyVault) credential() (azcore.TokenCredential, error) {
	co := azcore.ClientOptions{Transport: k.http}
	switch {
	case k.opts.ClientSecret != "":
		return azidentity.NewClientSecretCredential(k.opts.TenantID, k.opts.ClientID, k.opts.ClientSecret,
			&azidentity.ClientSecretCredentialOptions{ClientOptions: co})
	case k.opts.ManagedIdentity:
		o := &azidentity.ManagedIdentityCredentialOptions{ClientOptions: co}
		switch {
		case k.opts.ClientID != "":
			o.ID = azidentity.ClientID(k.opts.ClientID)
		case k.opts.ResourceID != "":
			o.ID = azidentity.ResourceID(k.opts.ResourceID)
		}
		return azidentity.NewManagedIdentityCredential(o)
	}
	return azidentity.NewDefaultAzureCredential(&azidentity.DefaultAzureCredentialOptions{
		ClientOptions: co, TenantID: k.opts.TenantID,
	})
}

// describeAzureError shortens an SDK error to status, code and message.
// Key Vault error bodies carry no secret values, but the SDK's full text
// spans many lines with request dumps; callers want one line.
func describeAzureError(err error) error {
	var re *azcore.ResponseError
	if !errors.As(err, &re) {
		return err
	}
	msg := ""
	if re.RawResponse != nil && re.RawResponse.Body != nil {
		var body struct {
			Error struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		b, _ := io.ReadAll(io.LimitReader(re.RawResponse.Body, 64<<10))
		if json.Unmarshal(b, &body) == nil {
			msg = body.Error.Message
		}
	}
	if msg == "" {
		return fmt.Errorf("key vault answered %d (%s)", re.StatusCode, re.ErrorCode)
	}
	return fmt.Errorf("key vault answered %d (%s): %s", re.StatusCode, re.ErrorCode, msg)
}

// compile-time check that *http.Client can carry SDK requests.
var _ policy.Transporter = (*http.Client)(nil)
