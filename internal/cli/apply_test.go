package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const applyYAML = `registry: MyRegistry
credentialSets:
  - name: dockerhub
    loginServer: docker.io
    usernameSecretId: https://MyKeyvault.vault.azure.net/secrets/usernamesecret
    passwordSecretId: https://MyKeyvault.vault.azure.net/secrets/passwordsecret
cacheRules:
  - name: ubuntu
    sourceRepository: docker.io/library/ubuntu
    targetRepository: ubuntu
    credentialSet: dockerhub
  - name: app
    sourceRepository: ghcr.io/org/app
    targetRepository: app
    syncMode: activesync
    syncReferrers: enabled
    tags: {startsWith: "v1."}
    platforms: [linux/amd64, linux/arm64]
    includeArtifactTypes: [images]
`

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "arca.yaml")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestApply(t *testing.T) {
	f, url := newFakeARM(t)
	env := cliEnv(t, url)
	file := writeFile(t, applyYAML)

	// A stray rule and set on the server, to be pruned.
	for _, args := range [][]string{
		{"credential-set", "create", "-r", "myregistry", "-n", "oldset", "-l", "quay.io", "-u", "env://U", "-p", "env://P"},
		{"cache", "create", "-r", "myregistry", "-n", "oldrule", "-s", "quay.io/x/y", "-t", "y", "-c", "oldset"},
	} {
		if res := runCLI(t, env, "", args...); res.err != nil {
			t.Fatal(res.err)
		}
	}
	before := len(f.writes())

	res := runCLI(t, env, "", "apply", "-f", file, "--prune", "--dry-run")
	if res.err != nil {
		t.Fatal(res.err)
	}
	wantPlan := "Action  Kind           Name\n" +
		"------  -------------  ---------\n" +
		"create  credentialSet  dockerhub\n" +
		"create  cacheRule      ubuntu\n" +
		"create  cacheRule      app\n" +
		"delete  cacheRule      oldrule\n" +
		"delete  credentialSet  oldset\n"
	if res.stdout != wantPlan || res.stderr != "Plan: 3 to create, 0 to update, 2 to delete, 0 unchanged.\n" {
		t.Fatalf("dry-run plan:\n%s\n%s", res.stdout, res.stderr)
	}
	if len(f.writes()) != before {
		t.Fatalf("--dry-run wrote: %v", f.writes()[before:])
	}

	res = runCLI(t, env, "", "apply", "-f", file, "--prune")
	if res.err != nil {
		t.Fatal(res.err)
	}
	var order []string
	for _, w := range f.writes()[before:] {
		order = append(order, w.Method+" "+w.Path[len(fakeBase):])
	}
	want := []string{"PUT /credentialSets/dockerhub", "PUT /cacheRules/ubuntu", "PUT /cacheRules/app", "DELETE /cacheRules/oldrule", "DELETE /credentialSets/oldset"}
	if strings.Join(order, "\n") != strings.Join(want, "\n") {
		t.Fatalf("apply order:\n%s", strings.Join(order, "\n"))
	}
	appBody := f.writes()[before+2].Body
	wantApp := `{"properties":{"sourceRepository":"ghcr.io/org/app","targetRepository":"app","credentialSetResourceId":null,"syncMode":"ActiveSync","syncReferrers":"Enabled","artifactSyncFilters":{"tags":{"type":"KQL","query":"Tags | where Name startswith 'v1.'"},"platforms":{"type":"array","values":["linux/amd64","linux/arm64"]},"artifactTypes":{"type":"include","values":["images"]}}}}`
	if appBody != wantApp {
		t.Fatalf("app body:\n got %s\nwant %s", appBody, wantApp)
	}
	if res.stderr != "Applied: 3 created, 0 updated, 2 deleted, 0 unchanged.\n" {
		t.Fatalf("stderr = %q", res.stderr)
	}

	// Idempotent: the second run changes nothing.
	before = len(f.writes())
	res = runCLI(t, env, "", "apply", "-f", file, "--prune", "-o", "json", "--query", "[].action")
	if res.err != nil || len(f.writes()) != before || res.stderr != "No changes: 3 unchanged.\n" {
		t.Fatalf("second run: %v, writes %v, stderr %q", res.err, f.writes()[before:], res.stderr)
	}
	if res.stdout != "[\n  \"unchanged\",\n  \"unchanged\",\n  \"unchanged\"\n]\n" {
		t.Fatalf("second run output: %s", res.stdout)
	}

	// A changed field is an update (PUT of the whole desired state).
	changed := strings.Replace(applyYAML, `startsWith: "v1."`, `startsWith: "v2."`, 1)
	changed = strings.Replace(changed, "secrets/passwordsecret", "secrets/rotated", 1)
	changed = strings.Replace(changed, "    credentialSet: dockerhub\n", "    credentialSet: dockerhub\n    retentionDays: 30\n", 1)
	res = runCLI(t, env, "", "apply", "-f", writeFile(t, changed), "-o", "tsv")
	if res.err != nil {
		t.Fatal(res.err)
	}
	if res.stdout != "update\tpasswordSecretId\tcredentialSet\tdockerhub\nupdate\tretentionDays\tcacheRule\tubuntu\nupdate\ttags\tcacheRule\tapp\n" {
		t.Fatalf("update plan tsv:\n%q", res.stdout)
	}

	// The identity that reads the secrets is part of the desired state.
	const kvReader = "/subscriptions/sub/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/KVReader"
	withID := strings.Replace(changed, "secrets/rotated\n", "secrets/rotated\n    identity: "+kvReader+"\n", 1)
	before = len(f.writes())
	if res = runCLI(t, env, "", "apply", "-f", writeFile(t, withID), "-o", "tsv"); res.err != nil || !strings.HasPrefix(res.stdout, "update\tidentity\tcredentialSet\tdockerhub\n") {
		t.Fatalf("identity added: %v\n%q", res.err, res.stdout)
	}
	if w := f.writes()[before]; !strings.HasSuffix(w.Body, `"identity":{"type":"UserAssigned","userAssignedIdentities":{"`+kvReader+`":{}}}}`) {
		t.Fatalf("identity body: %s", w.Body)
	}
	if res = runCLI(t, env, "", "apply", "-f", writeFile(t, withID)); res.err != nil || res.stderr != "No changes: 3 unchanged.\n" {
		t.Fatalf("identity unchanged: %v %q", res.err, res.stderr)
	}
}

func TestApplyFileErrors(t *testing.T) {
	_, url := newFakeARM(t)
	env := cliEnv(t, url)
	tests := []struct {
		yaml, want string
	}{
		{"registry: r\ncacheRules:\n  - name: x\n    sourceRepo: a\n", "field sourceRepo not found"},
		{"cacheRules:\n  - name: abcde\n    sourceRepository: ghcr.io/a\n    targetRepository: a\n", "the following arguments are required: --registry/-r"},
		{"registry: myregistry\ncacheRules:\n  - name: abcde\n    sourceRepository: ghcr.io/a:1\n    targetRepository: a\n", errSourceHasTag.Error()},
		{"registry: myregistry\ncacheRules:\n  - name: abcde\n    sourceRepository: ghcr.io/a\n    targetRepository: a\n    platforms: [linux/amd64]\n", "require syncMode: ActiveSync"},
		{"registry: myregistry\ncacheRules:\n  - name: abcde\n    sourceRepository: ghcr.io/a\n    targetRepository: a\n    syncMode: often\n", "'often' is not a valid value for 'syncMode'"},
		{"registry: myregistry\ncacheRules:\n  - name: abcde\n    sourceRepository: ghcr.io/a\n    targetRepository: a\n  - name: ABCDE\n    sourceRepository: ghcr.io/b\n    targetRepository: b\n", "listed twice"},
		{"registry: myregistry\ncredentialSets:\n  - name: abcde\n    loginServer: docker.io\n    usernameSecretId: env://U\n    passwordSecretId: s3cr3t-in-clear\n", "credentialSets[0].passwordSecretId: invalid secret reference"},
		{"registry: myregistry\ncredentialSets:\n  - name: abcde\n", "are required"},
		{"registry: myregistry\ncredentialSets:\n  - name: abcde\n    loginServer: docker.io\n    usernameSecretId: env://U\n    passwordSecretId: env://P\n    identity: /subscriptions/x/bad\n", "credentialSets[0].identity: Invalid user-assigned managed identity resource ID"},
	}
	for _, tt := range tests {
		res := runCLI(t, env, "", "apply", "-f", writeFile(t, tt.yaml))
		if res.err == nil || !strings.Contains(res.err.Error(), tt.want) || strings.Contains(res.err.Error(), "s3cr3t") {
			t.Errorf("%q: error = %v, want %q", tt.yaml, res.err, tt.want)
		}
	}
	res := runCLI(t, env, "registry: myregistry\n", "apply", "-f", "-")
	if res.err != nil || res.stderr != "No changes: 0 unchanged.\n" {
		t.Errorf("empty file from stdin: %v %q", res.err, res.stderr)
	}
}

// An endless input (/dev/zero) is refused after 16 MiB with a clear
// error, from a file and from stdin alike, instead of filling memory.
func TestApplyInputIsBounded(t *testing.T) {
	_, url := newFakeARM(t)
	env := cliEnv(t, url)
	res := runCLI(t, env, "", "apply", "-f", "/dev/zero")
	if res.err == nil || !strings.Contains(res.err.Error(), "larger than 16 MiB") {
		t.Errorf("apply -f /dev/zero: %v, want a too-large error", res.err)
	}
	big := "registry: myregistry\n#" + strings.Repeat("x", 17<<20) + "\n"
	res = runCLI(t, env, big, "apply", "-f", "-")
	if res.err == nil || !strings.Contains(res.err.Error(), "larger than 16 MiB") {
		t.Errorf("apply -f - with 17 MiB: %v, want a too-large error (not a silently truncated file)", res.err)
	}
}
