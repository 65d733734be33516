package secrets

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
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
			return nil, kindError{ErrIdentityUnavailable, fmt.Errorf("azure credential: %w", err)}
		}
		k.cred = cred
	}
	c, err := azsecrets.NewClient(vaultURL, identityErrors{k.cred}, &azsecrets.ClientOptions{
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

// SecretName is one secret of a key vault: its name and its URI without a
// version (the latest version). Never a value.
type SecretName struct {
	Name string
	URI  string
}

// The kinds of listing failure, for callers that answer each differently
// (errors.Is); the error's text says more.
var (
	ErrVaultNotFound       = errors.New("key vault not found")
	ErrVaultForbidden      = errors.New("key vault refused the identity")
	ErrIdentityUnavailable = errors.New("azure identity unavailable")
)

// identityErrors marks the credential's failures (no managed identity
// endpoint, an identity the endpoint does not know, a refused client
// secret), which the SDK returns as they are, as ErrIdentityUnavailable.
type identityErrors struct{ azcore.TokenCredential }

func (c identityErrors) GetToken(ctx context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	tok, err := c.TokenCredential.GetToken(ctx, o)
	if err != nil {
		return tok, kindError{ErrIdentityUnavailable, err}
	}
	return tok, nil
}

// kindError is err (its text alone) of a kind.
type kindError struct{ kind, err error }

func (e kindError) Error() string   { return e.err.Error() }
func (e kindError) Unwrap() []error { return []error{e.kind, e.err} }

// list reads the names of the enabled secrets of the vault at vaultURL,
// sorted, following nextLink; after max names it stops and reports
// truncated. Listing returns no values (Key Vault's list permission).
func (k *keyVault) list(ctx context.Context, vaultURL string, max int) (names []SecretName, truncated bool, err error) {
	c, err := k.client(vaultURL)
	if err != nil {
		return nil, false, err
	}
	pager := c.NewListSecretPropertiesPager(nil)
	for pager.More() && !truncated {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return nil, false, classifyListError(err)
		}
		for _, p := range page.Value {
			if p == nil || p.ID == nil || p.Attributes == nil || p.Attributes.Enabled == nil || !*p.Attributes.Enabled {
				continue
			}
			if len(names) == max {
				truncated = true
				break
			}
			name := p.ID.Name()
			names = append(names, SecretName{Name: name, URI: vaultURL + "/secrets/" + name})
		}
	}
	sort.Slice(names, func(i, j int) bool { return names[i].Name < names[j].Name })
	return names, truncated, nil
}

// classifyListError is describeAzureError with the kind of failure.
func classifyListError(err error) error {
	var re *azcore.ResponseError
	var dns *net.DNSError
	switch {
	case errors.Is(err, ErrIdentityUnavailable):
		return err
	case errors.As(err, &re) && (re.StatusCode == http.StatusForbidden || re.StatusCode == http.StatusUnauthorized):
		return kindError{ErrVaultForbidden, describeAzureError(err)}
	case errors.As(err, &dns) && dns.IsNotFound:
		return kindError{ErrVaultNotFound, fmt.Errorf("no such host %s: no key vault has that name", dns.Name)}
	}
	return describeAzureError(err)
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
