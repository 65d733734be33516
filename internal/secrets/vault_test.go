package secrets

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// kvBackend is a KV v2 server the tests can write to: the loopback
// fixture below, or a real `vault`/`bao` dev server when one is installed.
type kvBackend struct {
	addr, token string
}

// put writes data as a new version of mount/path through the KV v2 API
// (POST /v1/<mount>/data/<path> {"data":{...}}), as the vault CLI does.
func (b kvBackend) put(t *testing.T, mount, path string, data map[string]any) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"data": data})
	req, _ := http.NewRequest(http.MethodPost, b.addr+"/v1/"+mount+"/data/"+path, bytes.NewReader(body))
	req.Header.Set("X-Vault-Token", b.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusNoContent {
		t.Fatalf("write %s/%s: %s", mount, path, resp.Status)
	}
}

// kvFixture implements the read and write halves of Vault's KV v2 HTTP
// API (mount "secret", versions, X-Vault-Token, {"errors":[...]} bodies).
type kvFixture struct {
	token string
	mu    sync.Mutex
	docs  map[string][]map[string]any // path -> versions (1-based)
}

func (f *kvFixture) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.Header.Get("X-Vault-Token") != f.token {
		writeJSON(w, http.StatusForbidden, map[string]any{"errors": []string{"permission denied"}})
		return
	}
	p, ok := strings.CutPrefix(r.URL.Path, "/v1/secret/data/")
	if !ok {
		writeJSON(w, http.StatusNotFound, map[string]any{"errors": []string{"no handler for route \"" + r.URL.Path + "\". route entry not found."}})
		return
	}
	switch r.Method {
	case http.MethodPost, http.MethodPut:
		var in struct {
			Data map[string]any `json:"data"`
		}
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]any{"errors": []string{"error parsing JSON"}})
			return
		}
		f.docs[p] = append(f.docs[p], in.Data)
		writeJSON(w, http.StatusOK, map[string]any{"data": map[string]any{"version": len(f.docs[p])}})
	case http.MethodGet:
		versions := f.docs[p]
		n := len(versions)
		if v := r.URL.Query().Get("version"); v != "" {
			n, _ = strconv.Atoi(v)
		}
		if n < 1 || n > len(versions) {
			writeJSON(w, http.StatusNotFound, map[string]any{"errors": []string{}})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{
			"request_id": "8af4b2c1-0f1e-4a51-9d8e-4d5e0c1f2a3b", "lease_id": "", "renewable": false, "lease_duration": 0,
			"data": map[string]any{"data": versions[n-1], "metadata": map[string]any{
				"created_time": "2026-01-01T00:00:00Z", "custom_metadata": nil, "deletion_time": "", "destroyed": false, "version": n}},
			"wrap_info": nil, "warnings": nil, "auth": nil,
		})
	default:
		writeJSON(w, http.StatusMethodNotAllowed, map[string]any{"errors": []string{"unsupported operation"}})
	}
}

func fixtureBackend(t *testing.T) kvBackend {
	f := &kvFixture{token: "fixture-root-token", docs: map[string][]map[string]any{}}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return kvBackend{addr: srv.URL, token: f.token}
}

// realVaultBinary finds an OpenBao or Vault server binary: $ARCA_VAULT_BIN,
// then `bao` or `vault` in ARCA_TOOLS_BIN or PATH.
func realVaultBinary() string {
	if p := os.Getenv("ARCA_VAULT_BIN"); p != "" {
		return p
	}
	for _, name := range []string{"bao", "vault"} {
		if d := os.Getenv("ARCA_TOOLS_BIN"); d != "" {
			if p := filepath.Join(d, name); isExecutable(p) {
				return p
			}
		}
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}

// devServerBackend starts `<bin> server -dev` on a loopback port; the dev
// server mounts KV v2 at secret/ and uses the given root token.
func devServerBackend(t *testing.T, bin string) kvBackend {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(bin, "server", "-dev", "-dev-root-token-id=dev-root", "-dev-listen-address="+addr)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir(), "VAULT_DISABLE_MLOCK=true")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	b := kvBackend{addr: "http://" + addr, token: "dev-root"}
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		resp, err := http.Get(b.addr + "/v1/sys/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return b
			}
		}
	}
	t.Fatalf("%s dev server not healthy on %s:\n%s", bin, addr, out.String())
	return b
}

func TestVaultKV(t *testing.T) {
	backends := map[string]func(*testing.T) kvBackend{"fixture": fixtureBackend}
	if bin := realVaultBinary(); bin != "" {
		backends["dev-server:"+filepath.Base(bin)] = func(t *testing.T) kvBackend { return devServerBackend(t, bin) }
	} else {
		t.Log("no bao/vault binary found (ARCA_VAULT_BIN, ARCA_TOOLS_BIN, PATH): testing against the KV v2 fixture only")
	}
	for name, start := range backends {
		t.Run(name, func(t *testing.T) { testVaultKV(t, start(t)) })
	}
}

func testVaultKV(t *testing.T, b kvBackend) {
	ctx := context.Background()
	b.put(t, "secret", "arca/dockerhub", map[string]any{"username": "arca-bot", "password": "planted-pw-v1", "port": 5})
	b.put(t, "secret", "arca/dockerhub", map[string]any{"username": "arca-bot", "password": "planted-pw-v2", "port": 5})
	env := map[string]string{"VAULT_ADDR": b.addr, "VAULT_TOKEN": b.token}
	r, err := New(Options{Getenv: func(k string) string { return env[k] }, TTL: -1})
	if err != nil {
		t.Fatal(err)
	}
	for ref, want := range map[string]string{
		"vault://secret/arca/dockerhub#password":           "planted-pw-v2",
		"vault://secret/arca/dockerhub?version=1#password": "planted-pw-v1",
		"vault://secret/arca/dockerhub#username":           "arca-bot",
	} {
		got, err := r.Resolve(ctx, ref)
		if err != nil || got != want {
			t.Errorf("Resolve(%s) = %q, %v; want %q", ref, got, err, want)
		}
	}
	for ref, wantErr := range map[string]string{
		"vault://secret/arca/dockerhub#nokey":              `no key "nokey"`,
		"vault://secret/arca/dockerhub#port":               "is not a string",
		"vault://secret/arca/missing#password":             "404",
		"vault://secret/arca/dockerhub?version=9#username": "404",
	} {
		_, err := r.Resolve(ctx, ref)
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Errorf("Resolve(%s) error = %v, want %q", ref, err, wantErr)
			continue
		}
		if strings.Contains(err.Error(), "planted-pw") {
			t.Errorf("error leaks a secret value: %v", err)
		}
	}
	env["VAULT_TOKEN"] = "wrong-token"
	_, err = r.Resolve(ctx, "vault://secret/arca/dockerhub#password")
	if err == nil || !strings.Contains(err.Error(), "403") || !strings.Contains(err.Error(), "permission denied") {
		t.Errorf("wrong token error = %v", err)
	}
	delete(env, "VAULT_ADDR")
	_, err = r.Resolve(ctx, "vault://secret/arca/dockerhub#password")
	if err == nil || !strings.Contains(err.Error(), "VAULT_ADDR") {
		t.Errorf("unconfigured error = %v", err)
	}
	// Explicit options win over the environment.
	r2, err := New(Options{Getenv: func(string) string { return "" }, Vault: VaultOptions{Address: b.addr, Token: b.token}})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := r2.Resolve(ctx, "vault://secret/arca/dockerhub#username"); err != nil || got != "arca-bot" {
		t.Errorf("with options: %q, %v", got, err)
	}
}
