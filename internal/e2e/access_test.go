package e2e

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/arcacache/arca/internal/testutil/arcaproc"
	"github.com/arcacache/arca/internal/testutil/upstreamreg"
)

// Access control with real clients against the real binary, started
// closed (no --insecure-open): the admin user pushes, a token whose scope
// map reads team/* pulls with each client's own login, and everything
// outside the scope is refused.

// startClosedArca starts arca with access control on and the management
// token the CLI helpers use.
func startClosedArca(t testing.TB, extra ...string) *arca {
	t.Helper()
	return &arca{arcaproc.Start(t, arcaproc.Options{Bin: arcaBin, Closed: true, Args: extra,
		Env: []string{"ARCA_ADMIN_TOKEN=" + ptAdminToken}})}
}

type credentials struct {
	Username  string `json:"username"`
	Passwords []struct {
		Name  string `json:"name"`
		Value string `json:"value"`
	} `json:"passwords"`
}

// adminPassword enables the admin user and returns its first password.
func (a *arca) adminPassword(t testing.TB) string {
	t.Helper()
	a.cli(t, "update", "-n", "default", "--admin-enabled", "true")
	var c credentials
	if err := json.Unmarshal([]byte(a.cli(t, "credential", "show", "-n", "default")), &c); err != nil || len(c.Passwords) != 2 || c.Passwords[0].Value == "" {
		t.Fatalf("credential show: %v %+v", err, c)
	}
	return c.Passwords[0].Value
}

// token creates a token with a new scope map of the given --repository
// groups and returns its first password.
func (a *arca) token(t testing.TB, name string, repoArgs ...string) string {
	t.Helper()
	a.cli(t, append([]string{"scope-map", "create", "-r", "default", "-n", name + "-map"}, repoArgs...)...)
	var tk struct {
		Credentials credentials `json:"credentials"`
	}
	out := a.cli(t, "token", "create", "-r", "default", "-n", name, "--scope-map", name+"-map")
	if err := json.Unmarshal([]byte(out), &tk); err != nil || tk.Credentials.Username != name || len(tk.Credentials.Passwords) != 2 {
		t.Fatalf("token create: %v\n%s", err, out)
	}
	return tk.Credentials.Passwords[0].Value
}

func basicAuth(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

func (a *arca) getAs(t testing.TB, authz, path string) (int, http.Header, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, a.URL()+path, nil)
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, res.Header, string(b)
}

// refused checks that a client command failed the way the spec says.
func refused(t testing.TB, what string, out string, err error) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: succeeded, want refused\n%s", what, out)
		return
	}
	low := strings.ToLower(out)
	if !strings.Contains(low, "denied") && !strings.Contains(low, "unauthorized") && !strings.Contains(low, "401") && !strings.Contains(low, "403") {
		t.Errorf("%s: failed without UNAUTHORIZED/DENIED:\n%s", what, out)
	}
}

func TestAccessClients(t *testing.T) {
	a := startClosedArca(t)
	host := a.Addr

	// Closed by default: the spec's challenge, and no anonymous push.
	st, hdr, _ := a.getAs(t, "", "/v2/")
	wantChallenge := fmt.Sprintf(`Bearer realm="http://%s/oauth2/token",service="%s"`, host, host)
	if st != 401 || hdr.Get("WWW-Authenticate") != wantChallenge {
		t.Fatalf("anonymous /v2/: %d %q, want 401 %q", st, hdr.Get("WWW-Authenticate"), wantChallenge)
	}
	im := newImage(t, 71, "amd64", 64<<10, 8<<10)
	layout := im.writeLayout(t)
	anon := crane(t)
	out, err := anon.try("--insecure", "push", layout, host+"/team/app:v1")
	refused(t, "anonymous push", out, err)

	// The admin user pushes.
	adminPW := a.adminPassword(t)
	admin := crane(t)
	admin.run("auth", "login", host, "-u", "default", "-p", adminPW)
	admin.crane("push", layout, host+"/team/app:v1")
	admin.crane("push", layout, host+"/other/secret:v1")
	if got := admin.crane("catalog", host); got != "other/secret\nteam/app" {
		t.Fatalf("admin catalog: %q", got)
	}

	pw := a.token(t, "ci-reader", "--repository", "team/*", "content/read", "metadata/read")
	inScope, outScope := host+"/team/app:v1", host+"/other/secret:v1"

	t.Run("crane", func(t *testing.T) {
		c := crane(t)
		c.run("auth", "login", host, "-u", "ci-reader", "-p", pw)
		if got := c.crane("digest", inScope); got != im.Digest() {
			t.Fatalf("digest %s, want %s", got, im.Digest())
		}
		c.crane("pull", inScope, filepath.Join(t.TempDir(), "img.tar"))
		out, err := c.try("--insecure", "manifest", outScope)
		refused(t, "crane manifest outside scope", out, err)
		out, err = c.try("--insecure", "tag", inScope, "v2")
		refused(t, "crane tag (push) inside a read-only scope", out, err)
		// _catalog lists only what the token may read.
		if got := c.crane("catalog", host); got != "team/app" {
			t.Errorf("token catalog: %q, want only team/app", got)
		}
	})
	t.Run("regctl", func(t *testing.T) {
		c := newTool(t, "regctl")
		// set pings the registry, which answers 401 before login; the
		// setting is saved anyway.
		_, _ = c.try("registry", "set", "--tls", "disabled", host)
		c.run("registry", "login", host, "-u", "ci-reader", "-p", pw)
		if got := strings.TrimSpace(c.run("image", "digest", inScope)); got != im.Digest() {
			t.Fatalf("regctl digest %s", got)
		}
		out, err := c.try("manifest", "get", outScope)
		refused(t, "regctl outside scope", out, err)
		out, err = c.try("image", "copy", inScope, host+"/team/app:v3")
		refused(t, "regctl copy (push)", out, err)
	})
	t.Run("oras", func(t *testing.T) {
		c := newTool(t, "oras")
		c.dir = t.TempDir()
		c.run("login", "--plain-http", "-u", "ci-reader", "-p", pw, host)
		if got := c.oras("manifest", "fetch", "--descriptor", inScope); !strings.Contains(got, im.Digest()) {
			t.Fatalf("oras fetch: %s", got)
		}
		out, err := c.try("manifest", "fetch", "--plain-http", outScope)
		refused(t, "oras outside scope", out, err)
		c.writeFile("a.txt", []byte("hi"))
		out, err = c.try("push", "--plain-http", host+"/team/app:oras", "a.txt")
		refused(t, "oras push", out, err)
	})
	t.Run("skopeo", func(t *testing.T) {
		c := newTool(t, "skopeo")
		authFile := filepath.Join(t.TempDir(), "auth.json")
		c.run("login", "--tls-verify=false", "--authfile", authFile, "-u", "ci-reader", "-p", pw, host)
		got := c.run("inspect", "--tls-verify=false", "--authfile", authFile, "--format", "{{.Digest}}", "docker://"+inScope)
		if strings.TrimSpace(got) != im.Digest() {
			t.Fatalf("skopeo inspect: %s", got)
		}
		out, err := c.try("inspect", "--tls-verify=false", "--authfile", authFile, "docker://"+outScope)
		refused(t, "skopeo outside scope", out, err)
		out, err = c.try("copy", "--src-tls-verify=false", "--dest-tls-verify=false", "--authfile", authFile, "docker://"+inScope, "docker://"+host+"/team/app:skopeo")
		refused(t, "skopeo copy (push)", out, err)
	})
	t.Run("podman", func(t *testing.T) {
		p := podman(t, "unqualified-search-registries = []\n")
		p.podman("login", "--tls-verify=false", "-u", "ci-reader", "-p", pw, host)
		p.pull(inScope, im.Digest(), im, "--tls-verify=false")
		out, err := p.try(append(p.global, "pull", "--quiet", "--tls-verify=false", "--signature-policy", p.policy, outScope)...)
		refused(t, "podman outside scope", out, err)
	})
	t.Run("ctr", func(t *testing.T) {
		c := startContainerd(t)
		c.pull(inScope, im.Digest(), []*testImage{im}, "--plain-http", "--user", "ci-reader:"+pw)
		out, err := c.try("images", "pull", "--snapshotter", "native", "--plain-http", "--user", "ci-reader:"+pw, outScope)
		refused(t, "ctr outside scope", out, err)
	})

	// Anonymous pull is a registry property, off by default.
	a.cli(t, "update", "-n", "default", "--anonymous-pull-enabled", "true")
	if got := newTool(t, "crane").crane("digest", inScope); got != im.Digest() {
		t.Fatalf("anonymous pull on: %s", got)
	}
	out, err = anon.try("--insecure", "tag", inScope, "anon")
	refused(t, "anonymous push with anonymous pull on", out, err)
	a.cli(t, "update", "-n", "default", "--anonymous-pull-enabled", "false")
	out, err = newTool(t, "crane").try("--insecure", "digest", inScope)
	refused(t, "anonymous pull off again", out, err)

	// A deleted password stops working; the other one keeps working.
	var gen credentials
	if err := json.Unmarshal([]byte(a.cli(t, "token", "credential", "generate", "-r", "default", "-n", "ci-reader", "--password2")), &gen); err != nil || len(gen.Passwords) != 1 {
		t.Fatalf("generate password2: %v %+v", err, gen)
	}
	pw2 := gen.Passwords[0].Value
	if st, _, _ := a.getAs(t, basicAuth("ci-reader", pw2), "/v2/team/app/tags/list"); st != 200 {
		t.Fatalf("password2: %d", st)
	}
	a.cli(t, "token", "credential", "delete", "-r", "default", "-n", "ci-reader", "--password1")
	if st, _, _ := a.getAs(t, basicAuth("ci-reader", pw), "/v2/team/app/tags/list"); st != 401 {
		t.Errorf("deleted password1: %d", st)
	}
	if st, _, _ := a.getAs(t, basicAuth("ci-reader", pw2), "/v2/team/app/tags/list"); st != 200 {
		t.Errorf("password2 after deleting password1: %d", st)
	}
	pw = pw2

	// A disabled token stops working at once, for Basic and for the
	// token endpoint.
	a.cli(t, "token", "update", "-r", "default", "-n", "ci-reader", "--status", "disabled")
	if st, _, _ := a.getAs(t, basicAuth("ci-reader", pw), "/v2/team/app/manifests/v1"); st != 401 {
		t.Errorf("disabled token, Basic: %d", st)
	}
	if st, _, _ := a.getAs(t, basicAuth("ci-reader", pw), "/oauth2/token?service="+host+"&scope=repository:team/app:pull"); st != 401 {
		t.Errorf("disabled token, token endpoint: %d", st)
	}
}

// An unauthorized pull of a rule-backed repository never reaches the
// upstream: the decision comes before the rule is even resolved.
func TestUnauthorizedPullThroughCausesNoUpstreamRequest(t *testing.T) {
	up := upstreamreg.Start(t, upstreamreg.Options{})
	imgs := seedPullThrough(t, up, 330)
	a := startClosedArca(t, "--insecure-upstream", up.Host)
	a.cacheRule(t, "library-wild", up.Host+"/library/*", "lib/*")
	pw := a.token(t, "elsewhere", "--repository", "team/*", "content/read")
	before := len(up.AccessLog())
	for _, authz := range []string{"", basicAuth("elsewhere", pw), basicAuth("elsewhere", "wrong"), "Bearer forged.token.value"} {
		for _, path := range []string{"/v2/lib/app/manifests/v1", "/v2/lib/app/blobs/" + sha(imgs.app.Layers[0]), "/v2/lib/app/tags/list",
			"/v2/library/app/manifests/v1?ns=" + up.Host} {
			if st, _, body := a.getAs(t, authz, path); st != 401 && st != 403 {
				t.Errorf("%q %s: %d %s", authz, path, st, body)
			}
		}
	}
	if n := len(up.AccessLog()); n != before {
		t.Fatalf("unauthorized pulls caused %d upstream requests: %+v", n-before, up.AccessLog()[before:])
	}
	// The admin user's pull does go upstream (the check above can fail).
	admin := crane(t)
	admin.run("auth", "login", a.Addr, "-u", "default", "-p", a.adminPassword(t))
	if got := admin.crane("digest", a.Ref("lib/app:v1")); got != imgs.app.Digest() {
		t.Fatalf("admin pull-through: %s", got)
	}
	if !slices.ContainsFunc(up.AccessLog()[before:], func(e upstreamreg.LogEntry) bool { return strings.Contains(e.URI, "/manifests/v1") }) {
		t.Fatal("admin pull-through did not reach the upstream")
	}
	// A mirror request (the upstream's name, ?ns=) is authorized on the
	// repository it is served from: lib/app, not library/app.
	libPW := a.token(t, "libreader", "--repository", "lib/*", "content/read")
	libraryPW := a.token(t, "libraryreader", "--repository", "library/*", "content/read")
	mirror := func(user, pw string) int {
		req, _ := http.NewRequest(http.MethodGet, a.URL()+"/v2/library/app/manifests/v1?ns="+up.Host, nil)
		req.Header.Set("Authorization", basicAuth(user, pw))
		req.Header.Set("Accept", mtAcceptAll)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	if st := mirror("libreader", libPW); st != 200 {
		t.Errorf("mirror pull with pull on lib/*: %d", st)
	}
	if st := mirror("libraryreader", libraryPW); st != 403 {
		t.Errorf("mirror pull with pull on library/* only: %d", st)
	}
}

// Management principals: a role, optionally one registry; the same token
// logs in to the data plane with its role's rights.
func TestPrincipalRoles(t *testing.T) {
	a := startClosedArca(t, "--registry", "teamreg=team.localhost")
	var pr struct {
		Token string `json:"token"`
	}
	create := func(args ...string) string {
		t.Helper()
		if err := json.Unmarshal([]byte(a.cli(t, append([]string{"principal", "create"}, args...)...)), &pr); err != nil || pr.Token == "" {
			t.Fatalf("principal create: %v", err)
		}
		return pr.Token
	}
	puller := create("-n", "puller", "--role", "AcrPull")
	ci := create("-n", "ci-rules", "--role", "Contributor", "-r", "teamreg")

	im := newImage(t, 72, "amd64", 32<<10)
	admin := crane(t)
	admin.run("auth", "login", a.Addr, "-u", "default", "-p", a.adminPassword(t))
	admin.crane("push", im.writeLayout(t), a.Ref("team/app:v1"))

	c := crane(t)
	c.run("auth", "login", a.Addr, "-u", "puller", "-p", puller)
	if got := c.crane("digest", a.Ref("team/app:v1")); got != im.Digest() {
		t.Fatalf("AcrPull principal pull: %s", got)
	}
	out, err := c.try("--insecure", "tag", a.Ref("team/app:v1"), "v2")
	refused(t, "AcrPull principal push", out, err)
	out, err = a.tryCLIAs(puller, "cache", "list", "-r", "default")
	if err == nil || !strings.Contains(out, "AuthorizationFailed") {
		t.Errorf("AcrPull principal on the management API: %v %s", err, out)
	}

	// A CI token that may create cache rules in one registry, nothing else.
	if out, err := a.tryCLIAs(ci, "cache", "create", "-r", "teamreg", "-n", "dotnet", "-s", "mcr.microsoft.com/dotnet/runtime", "-t", "dotnet/runtime"); err != nil {
		t.Fatalf("scoped Contributor creating a rule: %v %s", err, out)
	}
	for _, args := range [][]string{
		{"cache", "create", "-r", "default", "-n", "dotnet", "-s", "mcr.microsoft.com/dotnet/runtime", "-t", "dotnet/runtime"},
		{"principal", "list"},
		{"token", "list", "-r", "default"},
	} {
		if out, err := a.tryCLIAs(ci, args...); err == nil {
			t.Errorf("scoped Contributor: arca %s succeeded: %s", strings.Join(args, " "), out)
		}
	}
	if got := a.cli(t, "audit", "list", "--query", "[?who=='ci-rules'].resource", "-o", "tsv"); !strings.Contains(got, "/registries/teamreg/cacheRules/dotnet") {
		t.Errorf("audit log: %q", got)
	}
}

// The registry commands, as az acr's.
func TestRegistryCLI(t *testing.T) {
	a := startClosedArca(t)
	if got := strings.TrimSpace(a.cli(t, "create", "-n", "NewReg01", "--sku", "Basic", "--query", "[loginServer, sku.name]", "-o", "tsv")); got != "newreg01.localhost\nBasic" {
		t.Fatalf("create: %q", got)
	}
	if got := strings.TrimSpace(a.cli(t, "registry", "list", "--query", "[].name", "-o", "tsv")); got != "default\nnewreg01" {
		t.Fatalf("list: %q", got)
	}
	id := strings.TrimSpace(a.cli(t, "show", "--name", "newreg01", "--query", "id", "-o", "tsv"))
	if !strings.HasSuffix(id, "/providers/Microsoft.ContainerRegistry/registries/newreg01") {
		t.Fatalf("show id: %q", id)
	}
	if got := strings.TrimSpace(a.cli(t, "update", "--name", "newreg01", "--role-assignment-mode", "rbac-abac", "--query", "roleAssignmentMode", "-o", "tsv")); got != "AbacRepositoryPermissions" {
		t.Fatalf("update: %q", got)
	}
	if out, err := a.tryCLI("delete", "-n", "default", "--yes"); err == nil || !strings.Contains(out, "RegistryConfiguredAtStartup") {
		t.Fatalf("delete default: %v %s", err, out)
	}
	a.cli(t, "delete", "-n", "newreg01", "--yes")
	if out, err := a.tryCLI("show", "-n", "newreg01"); err == nil || !strings.Contains(out, "ResourceNotFound") {
		t.Fatalf("show deleted: %v %s", err, out)
	}
	if out, err := a.tryCLI("credential", "show", "-n", "default"); err == nil || !strings.Contains(out, "AdminUserDisabled") {
		t.Fatalf("credential show with the admin user disabled: %v %s", err, out)
	}
}

// Each identity may have only so many upload sessions open.
func TestUploadSessionsCappedPerIdentity(t *testing.T) {
	a := startClosedArca(t, "--max-uploads-per-identity", "2")
	admin := basicAuth("default", a.adminPassword(t))
	pusher := basicAuth("pusher01", a.token(t, "pusher01", "--repository", "team/*", "content/read", "content/write"))
	start := func(authz string) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, a.URL()+"/v2/team/app/blobs/uploads/", nil)
		req.Header.Set("Authorization", authz)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode, res.Header.Get("Location")
	}
	st1, loc := start(admin)
	st2, _ := start(admin)
	if st1 != 202 || st2 != 202 {
		t.Fatalf("first two sessions: %d %d", st1, st2)
	}
	if st, _ := start(admin); st != http.StatusTooManyRequests {
		t.Fatalf("third session: %d, want 429", st)
	}
	if st, _ := start(pusher); st != 202 {
		t.Fatalf("another identity's session: %d", st)
	}
	req, _ := http.NewRequest(http.MethodDelete, a.URL()+loc, nil)
	req.Header.Set("Authorization", admin)
	res, err := http.DefaultClient.Do(req)
	if err != nil || res.StatusCode != 204 {
		t.Fatalf("cancel: %v %v", err, res)
	}
	res.Body.Close()
	if st, _ := start(admin); st != 202 {
		t.Fatalf("after cancelling one: %d", st)
	}
}

// The token endpoint as docker uses it: a refresh token from
// offline_token=true, then POST grant_type=refresh_token; a regenerated
// password revokes refresh tokens issued with the old one.
func TestRefreshTokenRevokedByNewPassword(t *testing.T) {
	a := startClosedArca(t)
	pw := a.token(t, "refresher", "--repository", "team/*", "content/read")
	st, _, body := a.getAs(t, basicAuth("refresher", pw), "/oauth2/token?service="+a.Addr+"&scope=repository:team/app:pull&offline_token=true")
	var tr struct {
		Token        string `json:"token"`
		RefreshToken string `json:"refresh_token"`
	}
	if err := json.Unmarshal([]byte(body), &tr); st != 200 || err != nil || tr.RefreshToken == "" {
		t.Fatalf("offline token: %d %s", st, body)
	}
	refresh := func() (int, string) {
		form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tr.RefreshToken}, "service": {a.Addr}, "scope": {"repository:team/app:pull"}}
		res, err := http.PostForm(a.URL()+"/oauth2/token", form)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	st, body = refresh()
	var at struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal([]byte(body), &at); st != 200 || err != nil || at.AccessToken == "" {
		t.Fatalf("refresh: %d %s", st, body)
	}
	if st, _, _ := a.getAs(t, "Bearer "+at.AccessToken, "/v2/team/app/tags/list"); st == 401 || st == 403 {
		t.Fatalf("refreshed access token refused: %d", st)
	}
	a.cli(t, "token", "credential", "generate", "-r", "default", "-n", "refresher", "--password1")
	if st, body := refresh(); st != 401 {
		t.Fatalf("refresh after a new password1: %d %s", st, body)
	}
}

// An upload session cannot be kept open past --upload-session-lifetime by
// trickling chunks into it.
func TestUploadSessionLifetime(t *testing.T) {
	a := startArcaAt(t, "", t.TempDir(), "--upload-session-lifetime", "1s")
	res, err := http.Post(a.URL()+"/v2/team/app/blobs/uploads/", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	loc := a.resolve(t, res.Header.Get("Location"))
	patch := func(b string) (int, string) {
		req, _ := http.NewRequest(http.MethodPatch, loc, strings.NewReader(b))
		req.Header.Set("Content-Type", "application/octet-stream")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		if l := res.Header.Get("Location"); l != "" {
			loc = a.resolve(t, l)
		}
		return res.StatusCode, string(body)
	}
	if st, body := patch("chunk1"); st != 202 {
		t.Fatalf("first chunk: %d %s", st, body)
	}
	time.Sleep(1500 * time.Millisecond)
	if st, body := patch("chunk2"); st != 404 || !strings.Contains(body, "BLOB_UPLOAD_UNKNOWN") || !strings.Contains(body, "expired") {
		t.Fatalf("chunk after the session lifetime: %d %s", st, body)
	}
}
