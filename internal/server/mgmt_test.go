package server

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/arcacache/arca/internal/testutil/upstreamreg"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type testServer struct {
	t      *testing.T
	url    string
	client *http.Client
	token  string
	seen   bytes.Buffer // every response header and body
	closer func()
}

// startServer runs the whole server (data plane and management plane) on
// a loopback port over dataDir, with debug logging into logs. It returns
// the admin token if this start generated one.
func startServer(t *testing.T, dataDir string, logs *lockedBuffer, mo ManagementOptions, pt PullThroughOptions) (*testServer, string) {
	t.Helper()
	return startServerWith(t, dataDir, logs, mo, pt, nil)
}

// startServerWith is startServer with more options set by edit.
func startServerWith(t *testing.T, dataDir string, logs *lockedBuffer, mo ManagementOptions, pt PullThroughOptions, edit func(*Options)) (*testServer, string) {
	t.Helper()
	var generated string
	mo.AdminTokenGenerated = func(tok string) { generated = tok }
	if pt.UpstreamAllow == nil { // tests stay on loopback
		pt.UpstreamAllow = []string{"127.0.0.0/8", "::1/128", "localhost"}
	}
	ready := make(chan net.Addr, 1)
	opts := Options{
		Addr: "127.0.0.1:0", DataDir: dataDir, RegistryName: "default", InsecureOpen: true,
		Logger:      slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Management:  mo,
		PullThrough: pt,
		Ready:       func(a net.Addr) { ready <- a },
	}
	if edit != nil {
		edit(&opts)
	}
	s, err := New(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Run(ctx) }()
	var addr net.Addr
	select {
	case addr = <-ready:
	case err := <-errc:
		t.Fatalf("server stopped: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("server did not start")
	}
	ts := &testServer{t: t, url: "http://" + addr.String(), client: &http.Client{Timeout: time.Minute}}
	var once sync.Once
	ts.closer = func() {
		once.Do(func() {
			cancel()
			if err := <-errc; err != nil {
				t.Errorf("server: %v", err)
			}
		})
	}
	t.Cleanup(ts.closer)
	return ts, generated
}

func (ts *testServer) do(method, path, host string, body any) (int, map[string]any) {
	ts.t.Helper()
	var rd io.Reader
	if body != nil {
		if s, ok := body.(string); ok {
			rd = strings.NewReader(s)
		} else {
			b, _ := json.Marshal(body)
			rd = bytes.NewReader(b)
		}
	}
	u := path
	if !strings.HasPrefix(u, "http") {
		u = ts.url + path
	}
	req, _ := http.NewRequest(method, u, rd)
	if host != "" {
		req.Host = host
	}
	req.Header.Set("Authorization", "Bearer "+ts.token)
	resp, err := ts.client.Do(req)
	if err != nil {
		ts.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	_ = resp.Header.Write(&ts.seen)
	ts.seen.Write(b)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return resp.StatusCode, m
}

const armBase = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/arca/providers/Microsoft.ContainerRegistry/registries/"

// TestSecretsNeverLeak plants secret values behind env:// and file://
// references, drives every management operation (successes and failures),
// and checks the values appear in no response, log line or database file,
// while the credential check did read them.
func TestSecretsNeverLeak(t *testing.T) {
	const (
		userValue = "planted-user-7f3a9c1e"
		passValue = "planted-pass-b81d4e60"
		newValue  = "planted-rotated-0c2f99aa"
	)
	// The upstream accepts exactly the planted account, so a Healthy
	// credential set proves arca resolved and used the planted values.
	up := upstreamreg.Start(t, upstreamreg.Options{Auth: upstreamreg.Htpasswd, Username: userValue, Password: passValue})
	dir := t.TempDir()
	t.Setenv("ARCA_TEST_PLANTED_USER", userValue)
	t.Setenv("ARCA_TEST_PLANTED_NEW", newValue)
	passFile := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(passFile, []byte(passValue+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	logs := &lockedBuffer{}
	ts, tok := startServer(t, filepath.Join(dir, "data"), logs, ManagementOptions{}, PullThroughOptions{InsecureUpstreams: []string{up.Host}})
	if tok == "" {
		t.Fatal("no admin token generated on first start")
	}
	ts.token = tok
	sets := armBase + "default/credentialSets/"
	rules := armBase + "default/cacheRules/"
	api := "?api-version=2025-09-01-preview"
	set := func(user, pass string) map[string]any {
		return map[string]any{"identity": map[string]any{"type": "SystemAssigned"}, "properties": map[string]any{
			"loginServer": up.Host, "authCredentials": []any{map[string]any{"name": "Credential1",
				"usernameSecretIdentifier": user, "passwordSecretIdentifier": pass}}}}
	}
	healthOf := func(m map[string]any) map[string]any {
		props, _ := m["properties"].(map[string]any)
		creds, _ := props["authCredentials"].([]any)
		if len(creds) != 1 {
			t.Fatalf("no credential in %v", m)
		}
		h, _ := creds[0].(map[string]any)["credentialHealth"].(map[string]any)
		return h
	}

	st, m := ts.do("PUT", sets+"planted"+api, "", set("env://ARCA_TEST_PLANTED_USER", "file://"+passFile))
	if h := healthOf(m); st != 201 || h["status"] != "Healthy" {
		t.Fatalf("create set: %d, health %v (the upstream should accept the planted account)", st, h)
	}
	st, m = ts.do("PUT", sets+"missing"+api, "", set("env://ARCA_TEST_NOT_SET_ANYWHERE", "file://"+passFile))
	if h := healthOf(m); st != 201 || h["status"] != "Unhealthy" || h["errorCode"] != "UsernameSecretNotResolved" {
		t.Fatalf("unresolvable set: %d %v", st, h)
	}
	// Rotating the password reference to a wrong value: saved, Unhealthy.
	st, m = ts.do("PATCH", sets+"planted"+api, "", map[string]any{"properties": map[string]any{"authCredentials": []any{
		map[string]any{"name": "Credential1", "passwordSecretIdentifier": "env://ARCA_TEST_PLANTED_NEW"}}}})
	if h := healthOf(m); st != 201 || h["status"] != "Unhealthy" {
		t.Fatalf("rotated to a wrong password: %d %v", st, h)
	}
	for _, step := range []struct {
		method, path string
		body         any
		want         int
	}{
		{"PUT", rules + "uprule" + api, map[string]any{"properties": map[string]any{"sourceRepository": up.Host + "/org/app", "targetRepository": "app",
			"credentialSetResourceId": armBase + "default/credentialSets/planted"}}, 201},
		{"GET", sets + "planted" + api, nil, 200},
		{"GET", sets + api, nil, 200},
		{"GET", rules + api, nil, 200},
		{"GET", "/v2/app/tags/list", "", 0}, // pull-through with the (wrong) rotated credentials
		{"PATCH", sets + "planted" + api, map[string]any{"properties": map[string]any{"authCredentials": []any{map[string]any{"name": "Credential1",
			"passwordSecretIdentifier": "not a reference"}}}}, 400},
		{"DELETE", sets + "planted" + api, nil, 409},
		{"PUT", rules + "hubrule" + api, map[string]any{"properties": map[string]any{"sourceRepository": "docker.io/library/x", "targetRepository": "x",
			"credentialSetResourceId": armBase + "default/credentialSets/planted"}}, 400},
		{"GET", "/arca/v1/info", nil, 200},
		{"DELETE", rules + "uprule" + api, nil, 202},
		{"DELETE", sets + "planted" + api, nil, 202},
	} {
		if st, m := ts.do(step.method, step.path, "", step.body); step.want != 0 && st != step.want {
			t.Errorf("%s %s: %d %v, want %d", step.method, step.path, st, m, step.want)
		}
	}
	ts.closer()

	var files bytes.Buffer
	_ = filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			b, _ := os.ReadFile(p)
			files.Write(b)
		}
		return nil
	})
	if !strings.Contains(files.String(), "ARCA_TEST_NOT_SET_ANYWHERE") {
		t.Fatal("the database files were not read (the reference should be stored)")
	}
	for _, v := range []string{userValue, passValue, newValue} {
		for what, text := range map[string]string{"responses": ts.seen.String(), "logs": logs.String(), "data directory": files.String()} {
			if strings.Contains(text, v) {
				t.Errorf("secret value %q appears in %s", v, what)
			}
		}
	}
	if !strings.Contains(logs.String(), "credential set saved") {
		t.Errorf("logs did not capture the management plane: %s", logs.String())
	}
}

// TestAdminTokenAndHosts checks the first-start token is shown once and
// required, and that the data plane picks the registry by Host.
func TestAdminTokenAndHosts(t *testing.T) {
	dir := t.TempDir()
	mo := ManagementOptions{Registries: []string{"teamreg=team.example.com"}}
	ts, tok := startServer(t, dir, &lockedBuffer{}, mo, PullThroughOptions{})
	if tok == "" {
		t.Fatal("no token generated")
	}
	if st, m := ts.do("GET", "/arca/v1/info", "", nil); st != 401 || m["error"] == nil {
		t.Fatalf("without the token: %d %v", st, m)
	}
	ts.token = tok
	st, info := ts.do("GET", "/arca/v1/info", "", nil)
	if st != 200 || info["defaultRegistry"] != "default" || len(info["registries"].([]any)) != 2 {
		t.Fatalf("info: %d %v", st, info)
	}
	// Push a blob through the data plane on the team host.
	blob := "hello"
	d := digest.FromString(blob)
	if st, _ := ts.do("POST", "/v2/team/app/blobs/uploads/?digest="+d.String(), "team.example.com:443", blob); st != 201 {
		t.Fatalf("push on team host: %d", st)
	}
	_, cat := ts.do("GET", "/v2/_catalog", "team.example.com", nil)
	_, defCat := ts.do("GET", "/v2/_catalog", "other.example.com", nil)
	if strings.Join(toStrings(cat["repositories"]), ",") != "team/app" || len(toStrings(defCat["repositories"])) != 0 {
		t.Fatalf("catalogs: team %v, default %v", cat, defCat)
	}
	// The repository blocks a rule in teamreg only.
	rule := map[string]any{"properties": map[string]any{"sourceRepository": "quay.io/team/app", "targetRepository": "team/app"}}
	if st, m := ts.do("PUT", armBase+"teamreg/cacheRules/teamrule?api-version=2023-07-01", "", rule); st != 409 {
		t.Fatalf("rule over pushed repo: %d %v", st, m)
	}
	if st, m := ts.do("PUT", armBase+"default/cacheRules/teamrule?api-version=2023-07-01", "", rule); st != 201 {
		t.Fatalf("same rule in the default registry: %d %v", st, m)
	}
	ts.closer()

	// Second start: no new token; the first still works.
	ts2, again := startServer(t, dir, &lockedBuffer{}, mo, PullThroughOptions{})
	if again != "" {
		t.Fatal("token generated again on second start")
	}
	ts2.token = tok
	if st, _ := ts2.do("GET", armBase+"default/cacheRules/teamrule?api-version=2023-07-01", "", nil); st != 200 {
		t.Fatalf("after restart: %d", st)
	}
}

func toStrings(v any) []string {
	var out []string
	list, _ := v.([]any)
	for _, e := range list {
		out = append(out, e.(string))
	}
	return out
}
