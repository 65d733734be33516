package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const (
	kvUser = "https://MyKeyvault.vault.azure.net/secrets/usernamesecret"
	kvPass = "https://MyKeyvault.vault.azure.net/secrets/passwordsecret"
)

func TestCredentialSetCommands(t *testing.T) {
	f, url := newFakeARM(t)
	env := cliEnv(t, url)
	run := func(stdin string, args ...string) cliResult {
		t.Helper()
		res := runCLI(t, env, stdin, args...)
		if res.err != nil {
			t.Fatalf("%v: %v", args, res.err)
		}
		return res
	}
	run("", "credential-set", "create", "-r", "MyRegistry", "-n", "MyDockerHubCredSet", "-l", "docker.io", "-u", kvUser, "-p", kvPass)
	w := f.writes()
	want := `{"properties":{"loginServer":"docker.io","authCredentials":[{"name":"Credential1","usernameSecretIdentifier":"` + kvUser + `","passwordSecretIdentifier":"` + kvPass + `"}]},"identity":{"type":"SystemAssigned"}}`
	if len(w) != 1 || w[0].Method != "PUT" || w[0].Path != fakeBase+"/credentialSets/MyDockerHubCredSet" || w[0].Body != want {
		t.Fatalf("create: %v\nwant body %s", w, want)
	}
	// update -p keeps the username from the current set (GET, then PATCH).
	newPass := "https://MyKeyvault.vault.azure.net/secrets/newsecretname"
	run("", "credential-set", "update", "-r", "MyRegistry", "-n", "MyDockerHubCredSet", "-p", newPass)
	w = f.writes()
	want = `{"properties":{"authCredentials":[{"name":"Credential1","usernameSecretIdentifier":"` + kvUser + `","passwordSecretIdentifier":"` + newPass + `"}]}}`
	if w[len(w)-1].Method != "PATCH" || w[len(w)-1].Body != want {
		t.Fatalf("update: %v", w[len(w)-1])
	}
	// --identity names the user-assigned identity that reads the secrets;
	// [system] goes back to the server's credential.
	const kvReader = "/subscriptions/sub/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/KVReader"
	run("", "credential-set", "update", "-r", "MyRegistry", "-n", "MyDockerHubCredSet", "--identity", kvReader)
	w = f.writes()
	want = `{"properties":{"authCredentials":[{"name":"Credential1","usernameSecretIdentifier":"` + kvUser + `","passwordSecretIdentifier":"` + newPass + `"}]},"identity":{"type":"UserAssigned","userAssignedIdentities":{"` + kvReader + `":{}}}}`
	if w[len(w)-1].Method != "PATCH" || w[len(w)-1].Body != want {
		t.Fatalf("update --identity: %v\nwant body %s", w[len(w)-1], want)
	}
	run("", "credential-set", "update", "-r", "MyRegistry", "-n", "MyDockerHubCredSet", "--identity", "[system]")
	if w = f.writes(); !strings.HasSuffix(w[len(w)-1].Body, `"identity":{"type":"SystemAssigned"}}`) {
		t.Fatalf("update --identity [system]: %v", w[len(w)-1])
	}
	run("", "credential-set", "create", "-r", "MyRegistry", "-n", "kvset", "-l", "docker.io", "-u", kvUser, "-p", kvPass, "--identity", kvReader)
	if w = f.writes(); !strings.HasSuffix(w[len(w)-1].Body, `"identity":{"type":"UserAssigned","userAssignedIdentities":{"`+kvReader+`":{}}}}`) {
		t.Fatalf("create --identity: %v", w[len(w)-1])
	}
	if res := runCLI(t, env, "", "credential-set", "create", "-r", "MyRegistry", "-n", "badid", "-l", "docker.io", "-u", kvUser, "-p", kvPass,
		"--identity", "/subscriptions/x/bad"); res.err == nil || !strings.Contains(res.err.Error(), "Invalid user-assigned managed identity resource ID") {
		t.Fatalf("create with a bad --identity: %v", res.err)
	}
	run("y\n", "credential-set", "delete", "-r", "MyRegistry", "-n", "kvset")
	// The seed's principal-ID query prints the bare value.
	res := run("", "credential-set", "show", "-n", "MyDockerHubCredSet", "-r", "MyRegistry", "--query", "identity.principalId", "-o", "tsv")
	if res.stdout != "5f6e7d8c-0000-4000-8000-000000000018\n" {
		t.Fatalf("principalId tsv = %q", res.stdout)
	}
	res = run("", "credential-set", "list", "-r", "MyRegistry", "-o", "table")
	if !strings.HasPrefix(res.stdout, "Name                LoginServer  Health   ProvisioningState  CreationDate\n------------------  -----------  -------  -----------------  -------------------------\nMyDockerHubCredSet  docker.io    Healthy  Succeeded          2026-01-01T00:00:00+00:00\n") {
		t.Fatalf("table:\n%s", res.stdout)
	}
	res = runCLI(t, env, "", "credential-set", "show", "-r", "MyRegistry", "-n", "Nope")
	if res.err == nil || res.err.Error() != "(ResourceNotFound) The credential set Nope could not be found." {
		t.Fatalf("show missing: %v", res.err)
	}
	run("y\n", "credential-set", "delete", "-r", "MyRegistry", "-n", "MyDockerHubCredSet")
	if w := f.writes(); w[len(w)-1].Method != "DELETE" {
		t.Fatalf("delete: %v", w[len(w)-1])
	}
	res = run("", "credential-set", "list", "-r", "MyRegistry")
	if res.stdout != "[]\n" {
		t.Fatalf("empty list = %q", res.stdout)
	}
}

func TestOutputFormats(t *testing.T) {
	_, url := newFakeARM(t)
	env := cliEnv(t, url)
	for _, n := range []string{"rule-c", "rule-a", "rule-b"} {
		if res := runCLI(t, env, "", "cache", "create", "-r", "myregistry", "-n", n, "-s", "quay.io/x/"+n, "-t", n); res.err != nil {
			t.Fatal(res.err)
		}
	}
	tests := []struct {
		args []string
		want string
	}{
		// paging: three rules over two pages, in the server's order
		{[]string{"--query", "[].name", "-o", "tsv"}, "rule-a\nrule-b\nrule-c\n"},
		{[]string{"--query", "[].name"}, "[\n  \"rule-a\",\n  \"rule-b\",\n  \"rule-c\"\n]\n"},
		{[]string{"--query", "[0].{target:targetRepository, n:name}", "-o", "tsv"}, "rule-a\trule-a\n"},
		{[]string{"--query", "[0].{Z:name, A:sourceRepository}", "-o", "table"}, "Z       A\n------  ----------------\nrule-a  quay.io/x/rule-a\n"},
		{[]string{"--query", "[?name=='rule-b'].{name:name,cred:credentialSetResourceId}", "-o", "tsv"}, "rule-b\tNone\n"},
		{[]string{"--query", "length(@)", "-o", "tsv"}, "3\n"},
		{[]string{"--query", "[0].name", "-o", "yaml"}, "rule-a\n"},
		{[]string{"-o", "none"}, ""},
		{[]string{"--query", "[0].nosuch"}, ""},                          // az prints nothing for a null result
		{[]string{"--query", "[0].name", "-o", "jsonc"}, "\"rule-a\"\n"}, // no colors: stdout is not a terminal
		// columns without a value in any row (credential set, sync mode) are left out
		{[]string{"-o", "table"}, "Name    SourceRepository  TargetRepository  ProvisioningState  CreationDate\n" +
			"------  ----------------  ----------------  -----------------  -------------------------\n" +
			"rule-a  quay.io/x/rule-a  rule-a            Succeeded          2026-01-01T00:00:00+00:00\n" +
			"rule-b  quay.io/x/rule-b  rule-b            Succeeded          2026-01-01T00:00:00+00:00\n" +
			"rule-c  quay.io/x/rule-c  rule-c            Succeeded          2026-01-01T00:00:00+00:00\n"},
	}
	for _, tt := range tests {
		res := runCLI(t, env, "", append([]string{"cache", "list", "-r", "myregistry"}, tt.args...)...)
		if res.err != nil || res.stdout != tt.want {
			t.Errorf("%v:\n got %q (%v)\nwant %q", tt.args, res.stdout, res.err, tt.want)
		}
	}
	res := runCLI(t, env, "", "cache", "show", "-r", "myregistry", "-n", "rule-a")
	for _, s := range []string{"{\n  \"creationDate\"", "\"credentialSetResourceId\": null", "\"identity\": null", "\"sourceRepository\": \"quay.io/x/rule-a\"",
		"\"resourceGroup\": \"arca\"", "\"type\": \"Microsoft.ContainerRegistry/registries/cacheRules\""} {
		if !strings.Contains(res.stdout, s) {
			t.Errorf("show output lacks %q:\n%s", s, res.stdout)
		}
	}
}

func TestRegistryResolution(t *testing.T) {
	f, url := newFakeARM(t)
	env := cliEnv(t, url)
	for _, reg := range []string{"MyRegistry", "myregistry.example.com", "127.0.0.1:5000"} {
		if res := runCLI(t, env, "", "cache", "list", "-r", reg); res.err != nil {
			t.Fatalf("-r %s: %v", reg, res.err)
		}
	}
	for _, r := range f.requests() {
		if strings.HasPrefix(r.Path, "/subscriptions/") && !strings.HasPrefix(r.Path, fakeBase+"/") {
			t.Fatalf("request outside the canonical registry path: %v", r)
		}
	}
	res := runCLI(t, env, "", "cache", "list", "-r", "bad-name!")
	if res.err == nil || !strings.Contains(res.err.Error(), "Registry names may contain only alpha numeric characters") {
		t.Fatalf("bad name: %v", res.err)
	}
	res = runCLI(t, env, "", "cache", "list", "-r", "other.example.com")
	if res.err == nil || !strings.Contains(res.err.Error(), `no registry on this server is served at host "other.example.com"`) {
		t.Fatalf("unknown host: %v", res.err)
	}
	res = runCLI(t, env, "", "cache", "list", "-r", "MyRegistry", "-g", "elsewhere")
	if res.err == nil || !strings.Contains(res.err.Error(), "(ResourceGroupNotFound)") {
		t.Fatalf("-g elsewhere: %v", res.err)
	}
}

func TestEndpointAndLogin(t *testing.T) {
	f, url := newFakeARM(t)
	dir := t.TempDir()
	env := map[string]string{"ARCA_CONFIG_DIR": dir}

	res := runCLI(t, env, "", "cache", "list", "-r", "myregistry")
	if res.err == nil || !strings.Contains(res.err.Error(), "no arca endpoint") {
		t.Fatalf("no endpoint: %v", res.err)
	}
	res = runCLI(t, env, "", "cache", "list", "-r", "myregistry", "--endpoint", url)
	if res.err == nil || !strings.Contains(res.err.Error(), "(AuthenticationFailed)") || !strings.Contains(res.err.Error(), "arca login") {
		t.Fatalf("no token: %v", res.err)
	}
	res = runCLI(t, env, "", "login", "--endpoint", url, "--token", "wrong")
	if res.err == nil {
		t.Fatal("login with a wrong token succeeded")
	}
	if _, err := os.Stat(filepath.Join(dir, "login.json")); err == nil {
		t.Fatal("failed login saved a file")
	}
	res = runCLI(t, env, "", "login", "--endpoint", url, "--token", f.token)
	if res.err != nil {
		t.Fatal(res.err)
	}
	fi, err := os.Stat(filepath.Join(dir, "login.json"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("login.json: %v, mode %v", err, fi.Mode())
	}
	if res := runCLI(t, env, "", "cache", "list", "-r", "myregistry"); res.err != nil {
		t.Fatalf("after login: %v", res.err)
	}
	// The flag wins over the saved login; the saved token is not sent to
	// another endpoint.
	other, otherURL := newFakeARM(t)
	res = runCLI(t, env, "", "cache", "list", "-r", "myregistry", "--endpoint", otherURL)
	if res.err == nil || !strings.Contains(res.err.Error(), "AuthenticationFailed") {
		t.Fatalf("other endpoint: %v", res.err)
	}
	if got := other.requests(); len(got) == 0 {
		t.Fatal("the --endpoint flag was not used")
	}
	// XDG_CONFIG_HOME and HOME fallbacks.
	xdg := t.TempDir()
	if res := runCLI(t, map[string]string{"XDG_CONFIG_HOME": xdg}, "", "login", "--endpoint", url, "--token", f.token); res.err != nil {
		t.Fatal(res.err)
	}
	if _, err := os.Stat(filepath.Join(xdg, "arca", "login.json")); err != nil {
		t.Fatal(err)
	}
	home := t.TempDir()
	if res := runCLI(t, map[string]string{"HOME": home, "ARCA_ENDPOINT": url, "ARCA_TOKEN": f.token}, "", "login"); res.err != nil {
		t.Fatal(res.err)
	}
	if _, err := os.Stat(filepath.Join(home, ".config", "arca", "login.json")); err != nil {
		t.Fatal(err)
	}
	if res := runCLI(t, env, "", "logout"); res.err != nil {
		t.Fatal(res.err)
	}
	if _, err := os.Stat(filepath.Join(dir, "login.json")); err == nil {
		t.Fatal("logout left login.json")
	}
}

func TestSyncAndDryRun(t *testing.T) {
	f, url := newFakeARM(t)
	env := cliEnv(t, url)
	if res := runCLI(t, env, "", "cache", "create", "-r", "myregistry", "-n", "MyRule", "-s", "ghcr.io/org/app", "-t", "app", "--sync", "activesync", "-y"); res.err != nil {
		t.Fatal(res.err)
	}
	// The server does not implement them yet: one clean line.
	res := runCLI(t, env, "", "cache", "sync", "-r", "myregistry", "-n", "MyRule", "--image", "1.0")
	if res.err == nil || res.err.Error() != "cache sync is not supported by this arca server (HTTP 501): (NotImplemented) sync is not implemented yet" {
		t.Fatalf("sync 501: %v", res.err)
	}
	res = runCLI(t, env, "", "cache", "create", "-r", "myregistry", "-n", "Other", "-s", "ghcr.io/org/app2", "-t", "app2", "--sync", "activesync", "--tag-starts-with", "2.", "--dry-run")
	if res.err == nil || !strings.Contains(res.err.Error(), "cache create --dry-run is not supported by this arca server (HTTP 501)") {
		t.Fatalf("dry-run 501: %v", res.err)
	}
	w := f.writes()
	if last := w[len(w)-1]; last.Path != fakeBase+"/checkCacheRuleArtifactSyncEstimate" ||
		last.Body != `{"properties":{"sourceRepository":"ghcr.io/org/app2","targetRepository":"app2","credentialSetResourceId":null,"syncMode":"ActiveSync","artifactSyncFilters":{"tags":{"type":"KQL","query":"Tags | where Name startswith '2.'"}}}}` {
		t.Fatalf("dry-run request: %v", last)
	}
	// Once the server answers, the results are printed.
	f.mu.Lock()
	f.estimate = map[string]any{"name": "app2", "totalCount": 189, "filteredCount": 2, "results": []any{map[string]any{"name": "2.0"}, map[string]any{"name": "2.1"}}}
	f.syncResult = map[string]any{"tag": "1.0", "digest": "sha256:abc"}
	f.mu.Unlock()
	res = runCLI(t, env, "", "cache", "create", "-r", "myregistry", "-n", "Other", "-s", "ghcr.io/org/app2", "-t", "app2", "--sync", "activesync", "--dry-run", "--query", "results[].name", "-o", "tsv")
	if res.err != nil || res.stdout != "2.0\n2.1\n" {
		t.Fatalf("dry-run: %q %v", res.stdout, res.err)
	}
	res = runCLI(t, env, "", "cache", "sync", "-r", "myregistry", "-n", "MyRule", "--tag", "1.0", "--query", "digest", "-o", "tsv")
	if res.err != nil || res.stdout != "sha256:abc\n" {
		t.Fatalf("sync: %q %v", res.stdout, res.err)
	}
	w = f.writes()
	if last := w[len(w)-1]; last.Path != rulePath+"/sync" || last.Body != `{"tag":"1.0"}` {
		t.Fatalf("sync request: %v", last)
	}
	res = runCLI(t, env, "", "cache", "sync", "-r", "myregistry", "-n", "NoRule", "--tag", "1.0")
	if res.err == nil || res.err.Error() != "(ResourceNotFound) The cache rule NoRule could not be found." {
		t.Fatalf("sync missing rule: %v", res.err)
	}
}

// Every command has help with examples.
func TestHelpHasExamples(t *testing.T) {
	root := NewRootCmd(Env{Getenv: func(string) string { return "" }})
	for _, group := range []string{"cache", "credential-set"} {
		cmd, _, err := root.Find([]string{group})
		if err != nil {
			t.Fatal(err)
		}
		for _, sub := range cmd.Commands() {
			if sub.Example == "" || !strings.Contains(sub.Example, "arca "+group) {
				t.Errorf("arca %s %s has no example", group, sub.Name())
			}
		}
	}
}
