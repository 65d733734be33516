package portal

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
)

// apiVersion is the management API version the portal speaks: a preview
// version, the one with the artifact-sync properties.
const apiVersion = "2026-03-01-preview"

// api calls the management API handler in-process as the session's
// principal (or, at sign-in, with the bearer token being checked): every
// change goes through the same routing, validation and ARM errors as the
// CLI's and the SDKs' calls, and no token reaches the browser.
type api struct {
	h   http.Handler
	ids Identities
	// token is set at sign-in only; after it, principal and stamp.
	token            string
	principal, stamp string
	// remote is the browser's address: the API throttles failed sign-ins
	// and audits changes by it.
	remote string
	base   string // /subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ContainerRegistry/registries/{reg}
}

// armError is an ARM error body's code and message.
type armError struct {
	Status  int
	Code    string
	Message string
}

func (e *armError) Error() string { return e.Code + ": " + e.Message }

// do sends method path (relative to the registry unless it starts with
// "/") with body v as JSON, and decodes a 2xx answer into out.
func (a *api) do(ctx context.Context, method, path string, v, out any) error {
	target := path
	if !strings.HasPrefix(path, "/") {
		target = a.base + "/" + path
	}
	if !strings.HasPrefix(target, "/arca/") {
		sep := "?"
		if strings.Contains(target, "?") {
			sep = "&"
		}
		target += sep + "api-version=" + apiVersion
	}
	var body bytes.Buffer
	if v != nil {
		if err := json.NewEncoder(&body).Encode(v); err != nil {
			return fmt.Errorf("portal: encoding %s %s: %w", method, path, err)
		}
	}
	if a.principal != "" {
		ctx = a.ids.WithSession(ctx, a.principal, a.stamp)
	}
	r, err := http.NewRequestWithContext(ctx, method, target, &body)
	if err != nil {
		return fmt.Errorf("portal: %s %s: %w", method, path, err)
	}
	r.RemoteAddr = a.remote
	if a.principal == "" {
		r.Header.Set("Authorization", "Bearer "+a.token)
	}
	r.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	a.h.ServeHTTP(rec, r)
	if rec.Code/100 != 2 {
		var eb struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		if json.Unmarshal(rec.Body.Bytes(), &eb) != nil || eb.Error.Code == "" {
			return &armError{Status: rec.Code, Code: "InternalServerError", Message: strings.TrimSpace(rec.Body.String())}
		}
		return &armError{Status: rec.Code, Code: eb.Error.Code, Message: eb.Error.Message}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(rec.Body.Bytes(), out); err != nil {
		return fmt.Errorf("portal: decoding %s %s: %w", method, path, err)
	}
	return nil
}

// info is GET /arca/v1/info.
type info struct {
	SubscriptionID  string `json:"subscriptionId"`
	ResourceGroup   string `json:"resourceGroup"`
	DefaultRegistry string `json:"defaultRegistry"`
	Registries      []struct {
		Name  string   `json:"name"`
		Hosts []string `json:"hosts"`
	} `json:"registries"`
}

func registryBase(in info, reg string) string {
	return "/subscriptions/" + url.PathEscape(in.SubscriptionID) + "/resourceGroups/" + url.PathEscape(in.ResourceGroup) +
		"/providers/Microsoft.ContainerRegistry/registries/" + url.PathEscape(reg)
}

// The resource shapes the portal reads (a subset of the API's).
type cacheRule struct {
	Name       string `json:"name"`
	Properties struct {
		CredentialSetResourceID *string `json:"credentialSetResourceId,omitempty"`
		SourceRepository        string  `json:"sourceRepository"`
		TargetRepository        string  `json:"targetRepository"`
		ProvisioningState       string  `json:"provisioningState,omitempty"`
		SyncMode                string  `json:"syncMode,omitempty"`
		SyncReferrers           string  `json:"syncReferrers,omitempty"`
		ArtifactSyncFilters     *struct {
			Tags *struct {
				Query string `json:"query"`
			} `json:"tags,omitempty"`
			Platforms     *kindFilter `json:"platforms,omitempty"`
			ImageTypes    *kindFilter `json:"imageTypes,omitempty"`
			ArtifactTypes *kindFilter `json:"artifactTypes,omitempty"`
		} `json:"artifactSyncFilters,omitempty"`
		ArtifactSyncStatus *struct {
			Status       string `json:"status"`
			LastSyncTime string `json:"lastSyncTime,omitempty"`
			LastError    string `json:"lastError,omitempty"`
			SyncedTags   int    `json:"syncedTags,omitempty"`
		} `json:"artifactSyncStatus,omitempty"`
	} `json:"properties"`
}

// kindFilter is a list filter of artifactSyncFilters (type array, include or exclude).
type kindFilter struct {
	Type   string   `json:"type"`
	Values []string `json:"values"`
}

// CredentialSet is the name at the end of the rule's credential set ID.
func (c cacheRule) CredentialSet() string {
	id := c.Properties.CredentialSetResourceID
	if id == nil {
		return ""
	}
	return (*id)[strings.LastIndex(*id, "/")+1:]
}

type credentialSet struct {
	Name       string `json:"name"`
	Properties struct {
		LoginServer     string `json:"loginServer"`
		AuthCredentials []struct {
			UsernameSecretIdentifier string `json:"usernameSecretIdentifier"`
			PasswordSecretIdentifier string `json:"passwordSecretIdentifier"`
			CredentialHealth         *struct {
				Status       string `json:"status"`
				ErrorCode    string `json:"errorCode,omitempty"`
				ErrorMessage string `json:"errorMessage,omitempty"`
			} `json:"credentialHealth,omitempty"`
		} `json:"authCredentials"`
		UpstreamRateLimit *struct {
			Limit     int `json:"limit"`
			Remaining int `json:"remaining"`
		} `json:"upstreamRateLimit,omitempty"`
	} `json:"properties"`
}

// list reads every page of a collection.
func list[T any](ctx context.Context, a *api, kind string) ([]T, error) {
	var all []T
	path := kind
	for path != "" {
		var page struct {
			Value    []T    `json:"value"`
			NextLink string `json:"nextLink"`
		}
		if err := a.do(ctx, http.MethodGet, path, nil, &page); err != nil {
			return nil, err
		}
		all = append(all, page.Value...)
		path = ""
		if page.NextLink != "" {
			u, err := url.Parse(page.NextLink)
			if err != nil {
				return nil, fmt.Errorf("portal: nextLink: %w", err)
			}
			q := u.Query()
			q.Del("api-version")
			path = u.Path + "?" + q.Encode()
		}
	}
	return all, nil
}
