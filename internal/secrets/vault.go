package secrets

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// vaultKV reads HashiCorp Vault / OpenBao KV version 2 secrets with one
// GET /v1/<mount>/data/<path>. Both servers speak the same HTTP API; a
// plain HTTP call keeps the Vault SDK (and its dependency tree) out.
type vaultKV struct {
	opts   VaultOptions
	getenv func(string) string
	http   *http.Client
}

// maxVaultResponse bounds what we read from Vault: KV v2 documents are
// small, and an unbounded read of a misbehaving endpoint must not OOM us.
const maxVaultResponse = 1 << 20

func newVaultKV(opts VaultOptions, getenv func(string) string, hc *http.Client) *vaultKV {
	return &vaultKV{opts: opts, getenv: getenv, http: hc}
}

// setting returns the configured value, else the first set variable.
func (v *vaultKV) setting(configured string, envs ...string) string {
	if configured != "" {
		return configured
	}
	for _, e := range envs {
		if s := v.getenv(e); s != "" {
			return s
		}
	}
	return ""
}

func (v *vaultKV) get(ctx context.Context, r Ref) (string, error) {
	addr := v.setting(v.opts.Address, "VAULT_ADDR", "BAO_ADDR")
	token := v.setting(v.opts.Token, "VAULT_TOKEN", "BAO_TOKEN")
	if addr == "" || token == "" {
		return "", errors.New("vault address and token are not configured (set VAULT_ADDR and VAULT_TOKEN)")
	}
	u, err := url.Parse(strings.TrimSuffix(addr, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("vault address %q is not an http(s) URL", addr)
	}
	u = u.JoinPath("v1", r.Mount, "data", r.Path)
	if r.Version != "" {
		u.RawQuery = url.Values{"version": {r.Version}}.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("X-Vault-Token", token)
	req.Header.Set("X-Vault-Request", "true")
	if ns := v.setting(v.opts.Namespace, "VAULT_NAMESPACE", "BAO_NAMESPACE"); ns != "" {
		req.Header.Set("X-Vault-Namespace", ns)
	}
	resp, err := v.http.Do(req)
	if err != nil {
		return "", fmt.Errorf("vault: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxVaultResponse))
	if err != nil {
		return "", fmt.Errorf("vault: reading response: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", vaultStatusError(resp.StatusCode, body)
	}
	return extractKey(body, r.Key)
}

// vaultStatusError reports Vault's {"errors":[...]} (which never holds
// secret data) or just the status.
func vaultStatusError(status int, body []byte) error {
	var e struct {
		Errors []string `json:"errors"`
	}
	if json.Unmarshal(body, &e) == nil && len(e.Errors) > 0 {
		return fmt.Errorf("vault answered %d: %s", status, strings.Join(e.Errors, "; "))
	}
	if status == http.StatusNotFound {
		return errors.New("vault answered 404: secret not found (or the mount is not KV version 2)")
	}
	return fmt.Errorf("vault answered %d", status)
}

// extractKey takes one string field out of a KV v2 read response. Error
// messages never quote the document: it holds secret values.
func extractKey(body []byte, key string) (string, error) {
	var doc struct {
		Data struct {
			Data     map[string]json.RawMessage `json:"data"`
			Metadata struct {
				Deleted   string `json:"deletion_time"`
				Destroyed bool   `json:"destroyed"`
			} `json:"metadata"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return "", errors.New("vault: response is not a KV version 2 document")
	}
	if doc.Data.Data == nil {
		if doc.Data.Metadata.Destroyed || doc.Data.Metadata.Deleted != "" {
			return "", errors.New("vault: this secret version is deleted or destroyed")
		}
		return "", errors.New("vault: response has no data (is the mount KV version 2?)")
	}
	raw, ok := doc.Data.Data[key]
	if !ok {
		return "", fmt.Errorf("vault: secret has no key %q", key)
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", fmt.Errorf("vault: key %q is not a string", key)
	}
	return s, nil
}
