package mgmt

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/arcacache/arca/internal/metadata"
)

const (
	testToken = "test-admin-token-0123456789"
	testSub   = "11111111-2222-3333-4444-555555555555"
	testRG    = "arca-rg"
)

// syncBuffer is a log sink safe for concurrent handlers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type fixture struct {
	t       testing.TB
	srv     *httptest.Server
	h       *Handler
	meta    metadata.Store
	logs    *syncBuffer
	changes []string
	mu      sync.Mutex
	tls     bool
}

type fixtureOpt func(*Options)

type fixtureServerOpt func(*fixture)

// newFixture serves a Handler over a fresh SQLite store with registries
// "default" and "teamreg" (on team.example.com).
func newFixture(t testing.TB, mods ...fixtureOpt) *fixture {
	return newFixtureWith(t, nil, mods...)
}

func newFixtureWith(t testing.TB, srvOpt fixtureServerOpt, mods ...fixtureOpt) *fixture {
	t.Helper()
	meta, err := metadata.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "arca.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { meta.Close() })
	regs, err := NewRegistries("default", []string{"teamreg=team.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	var recs []metadata.RegistryRecord
	for _, r := range regs.List() {
		recs = append(recs, metadata.RegistryRecord{Name: r.Name, Hosts: r.Hosts})
	}
	if err := meta.SyncRegistries(context.Background(), recs); err != nil {
		t.Fatal(err)
	}
	principals, err := NewPrincipals(meta, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := principals.SetAdminToken(context.Background(), testToken); err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, meta: meta, logs: &syncBuffer{}}
	opts := Options{
		SubscriptionID: testSub, ResourceGroup: testRG, Registries: regs, Store: meta, Principals: principals, Access: meta,
		Logger:   slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		OnChange: func(reg string) { f.mu.Lock(); f.changes = append(f.changes, reg); f.mu.Unlock() },
	}
	for _, m := range mods {
		m(&opts)
	}
	h, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	f.h = h
	if srvOpt != nil {
		srvOpt(f)
	}
	f.srv = httptest.NewUnstartedServer(h)
	if f.tls {
		f.srv.StartTLS()
	} else {
		f.srv.Start()
	}
	t.Cleanup(f.srv.Close)
	return f
}

// withTLS serves the fixture over HTTPS (as the Azure SDK requires for
// bearer tokens).
func withTLS(f *fixture) { f.tls = true }

// base is the ARM path of a registry.
func base(reg string) string {
	return "/subscriptions/" + testSub + "/resourceGroups/" + testRG + "/providers/Microsoft.ContainerRegistry/registries/" + reg
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("response is not a JSON object: %v: %s", err, r.body)
	}
	return m
}

// errorCode returns error.code of an ARM error body.
func (r response) errorCode() string {
	var b errorBody
	_ = json.Unmarshal(r.body, &b)
	return b.Error.Code
}

func (r response) errorMessage() string {
	var b errorBody
	_ = json.Unmarshal(r.body, &b)
	return b.Error.Message
}

// do sends a request with the admin token; path may be absolute (a URL the
// server handed out) or a path (api-version is appended if missing).
func (f *fixture) do(method, path string, body any) response {
	return f.doAuth(method, path, body, "Bearer "+testToken)
}

func (f *fixture) doAuth(method, path string, body any, auth string) response {
	f.t.Helper()
	u := path
	if !strings.HasPrefix(u, "http") {
		if !strings.Contains(u, "api-version=") && strings.HasPrefix(u, "/subscriptions/") {
			sep := "?"
			if strings.Contains(u, "?") {
				sep = "&"
			}
			u += sep + "api-version=2025-09-01-preview"
		}
		u = f.srv.URL + u
	}
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			f.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		f.t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// ruleBody is a PUT body for a cache rule.
func ruleBody(source, target, credSet string) map[string]any {
	props := map[string]any{"sourceRepository": source, "targetRepository": target}
	if credSet != "" {
		props["credentialSetResourceId"] = base("default") + "/credentialSets/" + credSet
	}
	return map[string]any{"properties": props}
}

func credSetBody(loginServer, user, pass string) map[string]any {
	return map[string]any{
		"identity": map[string]any{"type": "SystemAssigned"},
		"properties": map[string]any{
			"loginServer": loginServer,
			"authCredentials": []any{map[string]any{
				"name": "Credential1", "usernameSecretIdentifier": user, "passwordSecretIdentifier": pass,
			}},
		},
	}
}

// mustStatus fails unless r has status want.
func mustStatus(t *testing.T, what string, r response, want int) {
	t.Helper()
	if r.status != want {
		t.Fatalf("%s: status %d, want %d: %s", what, r.status, want, r.body)
	}
}
