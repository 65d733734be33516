package seedtest

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/arcacache/arca/internal/oci"
	"github.com/arcacache/arca/internal/testutil/upstreamreg"
)

const (
	testSub  = "00000000-0000-0000-0000-000000000000"
	uamiID   = "/subscriptions/" + testSub + "/resourceGroups/identities/providers/Microsoft.ManagedIdentity/userAssignedIdentities/MyACRCacheIdentity"
	envCreds = "-u env://UPSTREAM_USER -p env://UPSTREAM_PASS"
)

// outcome is what a seed command must do on arca.
type outcome int

const (
	// ok: exit 0, stdout JSON (or what check expects).
	ok outcome = iota
	// armError: exit non-zero with one line "arca: (Code) message" on
	// stderr, where Code is one of codes (any code when codes is empty).
	// Used where the seed's command is refused by a documented rule.
	armError
	// okOrUnsupported: exit 0, or one clean line saying the server does
	// not support it.
	okOrUnsupported
)

// step is a seed command (seed = its text in the seed, verbatim) or a
// setup command (setup = arca args) that makes the seed's preconditions
// true, e.g. a credential set the seed assumes exists.
type step struct {
	seed  string
	setup []string
	vars  map[string]string // placeholder values for this command
	stdin string
	want  outcome
	codes []string
	check func(t *testing.T, out string, got map[string]any)
}

type seedScript struct {
	file  string
	vars  map[string]string // placeholders shared by the seed's commands
	steps []step
}

func setup(args string) step { return step{setup: strings.Fields(args)} }

// seedScripts returns the seeds' commands; upstream is a real registry
// (HOST:PORT) holding org/tool:latest, which the seed's ActiveSync rule
// syncs from, so `cache sync` really fetches.
func seedScripts(upstream string) []seedScript {
	return []seedScript{seed000(upstream), seed001(), seed002(), seed004()}
}

// seed000 is the acrcache extension's README (placeholders).
func seed000(upstream string) seedScript {
	rule := func(name, src, tgt string) map[string]string {
		return map[string]string{"<rule-name>": name, "<source-repo>": src, "<target-repo>": tgt}
	}
	return seedScript{file: "000_d9f0a0848340d9a4.txt", vars: map[string]string{
		"<registry-name>": "myregistry", "<target-registry>": "myregistry", "<subscription-id>": testSub, "<sub-id>": testSub,
		"<resource-group>": "identities", "<rg>": "identities", "<identity-name>": "MyACRCacheIdentity",
		"<upstream-acr>": "upstreamregistry", "<source-registry>": "upstreamregistry", "<tag>": "latest",
		"<credential-set>": "ghcr-creds", "<new-credential-set>": "ghcr-creds2",
	}, steps: []step{
		{seed: "az acr cache list -r <registry-name>", check: isEmptyList},
		{seed: "az acr cache create -r <registry-name> -n <rule-name> -s <source-repo> -t <target-repo>",
			vars: rule("basic-rule", "mcr.microsoft.com/dotnet/runtime", "dotnet/runtime"), check: field("sourceRepository", "mcr.microsoft.com/dotnet/runtime")},
		setup("credential-set create -r myregistry -n ghcr-creds -l ghcr.io " + envCreds),
		setup("credential-set create -r myregistry -n ghcr-creds2 -l ghcr.io " + envCreds),
		{seed: "az acr cache create -r <registry-name> -n <rule-name> -s <source-repo> -t <target-repo> -c <credential-set>",
			vars: rule("ghcr-rule", "ghcr.io/org/app", "app"), check: credSet("ghcr-creds")},
		{seed: "az acr cache create -r <registry-name> -n <rule-name> -s <upstream-acr>.azurecr.io/<source-repo> -t <target-repo> \\\n  --assign-identity /subscriptions/<subscription-id>/resourceGroups/<resource-group>/providers/Microsoft.ManagedIdentity/userAssignedIdentities/<identity-name>",
			vars: rule("acr-rule", "myapp", "myapp"), check: hasIdentity},
		{seed: "az acr cache create -r <registry-name> -n <rule-name> -s <source-repo> -t <target-repo> \\\n  --sync activesync --platforms linux/amd64,linux/arm64 --sync-referrers enabled \\\n  --include-artifact-types images,notary-project-signature",
			vars: rule("sync-rule", upstream+"/org/tool", "tool"), stdin: "y\n", check: field("syncMode", "ActiveSync")},
		{seed: "az acr cache update -r <registry-name> -n <rule-name> -c <new-credential-set>",
			vars: rule("ghcr-rule", "", ""), check: credSet("ghcr-creds2")},
		{seed: "az acr cache update -r <registry-name> -n <rule-name> \\\n  --assign-identity /subscriptions/<subscription-id>/resourceGroups/<resource-group>/providers/Microsoft.ManagedIdentity/userAssignedIdentities/<identity-name>",
			vars: rule("acr-rule", "", ""), check: hasIdentity},
		{seed: "az acr cache update -r <registry-name> -n <rule-name> --sync activesync --platforms linux/amd64 \\\n  --sync-referrers enabled --include-artifact-types images",
			vars: rule("basic-rule", "", ""), stdin: "y\n", check: field("syncMode", "ActiveSync")},
		{seed: "az acr cache update -r <registry-name> -n <rule-name> --remove-cred-set",
			vars: rule("ghcr-rule", "", ""), check: credSet("")},
		{seed: "az acr cache show -r <registry-name> -n <rule-name>", vars: rule("ghcr-rule", "", ""), check: field("name", "ghcr-rule")},
		{seed: "az acr cache sync -r <registry-name> -n <rule-name> --image <tag>", vars: rule("sync-rule", "", ""), check: field("tag", "latest")},
		{seed: "az acr cache delete -r <registry-name> -n <rule-name>", vars: rule("ghcr-rule", "", ""), stdin: "y\n", check: isEmpty},
		{seed: "az acr cache create -r <target-registry> -n <rule-name> -s <source-registry>.azurecr.io/<repo> -t <target-repo> \\\n  --assign-identity /subscriptions/<sub-id>/resourceGroups/<rg>/providers/Microsoft.ManagedIdentity/userAssignedIdentities/<identity-name>",
			vars: map[string]string{"<rule-name>": "acr-rule2", "<repo>": "team/app", "<target-repo>": "team/app"}, check: hasIdentity},
	}}
}

// seed001 is the ACR-to-ACR article (managed identity).
func seed001() seedScript {
	return seedScript{file: "001_6ff0903f292b2582.txt", vars: map[string]string{"IDENTITY_RESOURCE_ID": uamiID, "<cache-rule-name>": "MyRule"},
		steps: []step{
			{seed: `az acr cache create \ -r MyRegistry \ -n MyRule \ -s upstreamregistry.azurecr.cn/myapp \ -t myapp \ --identity "$IDENTITY_RESOURCE_ID"`, check: hasIdentity},
			{seed: "az acr cache show -r MyRegistry -n MyRule", check: field("sourceRepository", "upstreamregistry.azurecr.cn/myapp")},
			{seed: "az acr cache delete -r MyRegistry -n <cache-rule-name>", stdin: "y\n", check: isEmpty},
		}}
}

const (
	credSetCreate = `az acr credential-set create -r MyRegistry \ -n MyDockerHubCredSet \ -l docker.io \ -u https://MyKeyvault.vault.azure.net/secrets/usernamesecret \ -p https://MyKeyvault.vault.azure.net/secrets/passwordsecret`
	credSetUpdate = "az acr credential-set update -r MyRegistry -n MyDockerHubCredSet -p https://MyKeyvault.vault.azure.net/secrets/newsecretname"
	dockerRule    = "az acr cache create -r MyRegistry -n MyRule -s docker.io/library/ubuntu -t ubuntu -c MyDockerHubCredSet"
)

// seed002 is the older artifact cache article.
func seed002() seedScript {
	return seedScript{file: "002_2d8e9988b079142b.txt", steps: []step{
		// Refused twice over as written: "ubuntu-" is not a repository name
		// and Docker Hub needs a credential set.
		{seed: "az acr Cache create -r MyRegistry -n MyRule -s docker.io/library/ubuntu -t ubuntu-", want: armError},
		setup("cache create -r myregistry -n MyRule -s mcr.microsoft.com/dotnet/sdk -t dotnet/sdk"),
		{seed: "az acr Cache show -r MyRegistry -n MyRule", check: field("targetRepository", "dotnet/sdk")},
		setup("cache delete -r myregistry -n MyRule --yes"),
		setup("credential-set create -r myregistry -n NewCredSet -l docker.io " + envCreds),
		{seed: credSetCreate, check: field("loginServer", "docker.io")},
		{seed: credSetUpdate, check: secretIDs("usernamesecret", "newsecretname")},
		{seed: "az acr credential-set show -r MyRegistry -n MyDockerHubCredSet", check: hasPrincipal},
		{seed: dockerRule, check: credSet("MyDockerHubCredSet")},
		{seed: "az acr cache update -r MyRegistry -n MyRule -c NewCredSet", check: credSet("NewCredSet")},
		// Docker Hub rules need a credential set, so removing it is refused.
		{seed: "az acr cache update -r MyRegistry -n MyRule --remove-cred-set", want: armError, codes: []string{"EnforceDockerAuthentication"}},
		{seed: "az acr cache show -r MyRegistry -n MyRule", check: credSet("NewCredSet")},
		{seed: `az acr credential-set show -n MyDockerHubCredSet \ -r MyRegistry \ --query 'identity.principalId' \ -o tsv`, check: isPrincipalTSV},
		{seed: "az acr cache list -r MyRegistry", check: listLen(1)},
		{seed: "az acr cache delete -r MyRegistry -n MyRule", stdin: "y\n", check: isEmpty},
		{seed: "az acr credential-set list -r MyRegistry", check: listLen(2)},
		{seed: "az acr credential-set delete -r MyRegistry -n MyDockerHubCredSet", stdin: "y\n", check: isEmpty},
	}}
}

// seed004 is the current artifact cache CLI article.
func seed004() seedScript {
	return seedScript{file: "004_0985605923f916ec.txt", steps: []step{
		{seed: credSetCreate, check: field("loginServer", "docker.io")},
		{seed: credSetUpdate, check: secretIDs("usernamesecret", "newsecretname")},
		{seed: "az acr credential-set show -r MyRegistry -n MyDockerHubCredSet", check: hasPrincipal},
		setup("credential-set create -r myregistry -n NewCredSet -l docker.io " + envCreds),
		{seed: dockerRule, check: credSet("MyDockerHubCredSet")},
		{seed: "az acr cache update -r MyRegistry -n MyRule -c NewCredSet", check: credSet("NewCredSet")},
		{seed: "az acr cache update -r MyRegistry -n MyRule --remove-cred-set", want: armError, codes: []string{"EnforceDockerAuthentication"}},
		{seed: "az acr cache show -r MyRegistry -n MyRule", check: credSet("NewCredSet")},
		// The tip's placeholders are not a valid source (no registry host,
		// upper case): the server refuses with its validation error.
		{seed: "az acr cache create --registry Myregistry --name MyRule --source-repo MySourceRepository --target-repo MyTargetRepository", want: armError},
		setup("credential-set create -r myregistry -n MyCredentialSet -l ghcr.io " + envCreds),
		setup("credential-set create -r myregistry -n CredentialSet -l quay.io " + envCreds),
		{seed: "az acr credential-set show --name MyCredentialSet --registry MyRegistry", check: field("name", "MyCredentialSet")},
		{seed: "az acr credential-set show --name CredentialSet --registry MyRegistry", check: field("name", "CredentialSet")},
		{seed: "az acr cache delete -r MyRegistry -n MyRule", stdin: "y\n", check: isEmpty},
		{seed: "az acr credential-set delete -r MyRegistry -n MyDockerHubCredSet", stdin: "y\n", check: isEmpty},
	}}
}

// TestSeedCommands runs each seed's commands, in order, against a fresh
// server.
func TestSeedCommands(t *testing.T) {
	up := upstreamreg.Start(t, upstreamreg.Options{})
	up.PushImage(t, "org/tool", "latest", &oci.Platform{OS: "linux", Architecture: "amd64"}, []byte("tool layer"))
	for _, sd := range seedScripts(up.Host) {
		t.Run(sd.file, func(t *testing.T) {
			srv := startServer(t, nil, "--insecure-upstream", up.Host)
			state := map[string]string{}
			for i, st := range sd.steps {
				if st.setup != nil {
					srv.mustArca(t, st.setup...)
					continue
				}
				// One subtest per command: a failure is reported and the
				// seed's later commands still run.
				t.Run(fmt.Sprintf("%02d", i), func(t *testing.T) { runSeedStep(t, srv, sd, st, state) })
			}
		})
	}
}

func runSeedStep(t *testing.T, srv *server, sd seedScript, st step, state map[string]string) {
	t.Helper()
	vars := map[string]string{}
	for k, v := range sd.vars {
		vars[k] = v
	}
	for k, v := range st.vars {
		vars[k] = v
	}
	args, err := toArgs(st.seed, vars)
	if err != nil {
		t.Fatal(err)
	}
	r := srv.runArca(t, st.stdin, args...)
	cmdline := "arca " + strings.Join(args, " ")
	t.Logf("%s -> exit %d", cmdline, r.code)
	switch st.want {
	case ok:
		if r.code != 0 {
			t.Fatalf("%s: exit %d, stderr:\n%s", cmdline, r.code, r.stderr)
		}
	case armError:
		checkOneLineError(t, cmdline, r)
		if !strings.HasPrefix(r.stderr, "arca: (") {
			t.Fatalf("%s: want an ARM error \"(Code) message\", got %q", cmdline, r.stderr)
		}
		if len(st.codes) > 0 && !containsAny(r.stderr, st.codes) {
			t.Fatalf("%s: error %q, want one of %v", cmdline, r.stderr, st.codes)
		}
		t.Logf("%s: refused as expected: %s", cmdline, strings.TrimSpace(r.stderr))
		return
	case okOrUnsupported:
		if r.code != 0 {
			checkOneLineError(t, cmdline, r)
			if !strings.Contains(r.stderr, "is not supported by this arca server") {
				t.Fatalf("%s: %q", cmdline, r.stderr)
			}
			t.Logf("%s: %s", cmdline, strings.TrimSpace(r.stderr))
			return
		}
	}
	var got map[string]any
	_ = json.Unmarshal([]byte(r.stdout), &got)
	if st.check != nil {
		if strings.Contains(st.seed, "principalId") {
			got = map[string]any{"expected": state["principalId"]}
		}
		st.check(t, r.stdout, got)
	}
	if id, ok := got["identity"].(map[string]any); ok && strings.Contains(st.seed, "credential-set show -r") {
		state["principalId"], _ = id["principalId"].(string)
	}
}

func checkOneLineError(t *testing.T, cmdline string, r result) {
	t.Helper()
	if r.code == 0 {
		t.Fatalf("%s: exit 0, want a failure; stdout:\n%s", cmdline, r.stdout)
	}
	if !strings.HasPrefix(r.stderr, "arca: ") || strings.Count(r.stderr, "\n") != 1 || r.stdout != "" {
		t.Fatalf("%s: want one line \"arca: ...\" on stderr and nothing on stdout, got stderr %q stdout %q", cmdline, r.stderr, r.stdout)
	}
}

func containsAny(s string, subs []string) bool {
	for _, x := range subs {
		if strings.Contains(s, x) {
			return true
		}
	}
	return false
}

func field(k, want string) func(*testing.T, string, map[string]any) {
	return func(t *testing.T, out string, got map[string]any) {
		t.Helper()
		if v, _ := got[k].(string); !strings.EqualFold(v, want) {
			t.Fatalf("%s = %q, want %q; output:\n%s", k, v, want, out)
		}
	}
}

func credSet(name string) func(*testing.T, string, map[string]any) {
	return func(t *testing.T, out string, got map[string]any) {
		t.Helper()
		id, _ := got["credentialSetResourceId"].(string)
		if name == "" && id != "" || name != "" && !strings.HasSuffix(strings.ToLower(id), "/credentialsets/"+strings.ToLower(name)) {
			t.Fatalf("credentialSetResourceId = %q, want set %q; output:\n%s", id, name, out)
		}
	}
}

func hasIdentity(t *testing.T, out string, got map[string]any) {
	t.Helper()
	id, _ := got["identity"].(map[string]any)
	uai, _ := id["userAssignedIdentities"].(map[string]any)
	for k := range uai {
		if strings.EqualFold(k, uamiID) {
			return
		}
	}
	t.Fatalf("identity does not name %s; output:\n%s", uamiID, out)
}

func hasPrincipal(t *testing.T, out string, got map[string]any) {
	t.Helper()
	id, _ := got["identity"].(map[string]any)
	if p, _ := id["principalId"].(string); p == "" {
		t.Fatalf("no identity.principalId; output:\n%s", out)
	}
}

func isPrincipalTSV(t *testing.T, out string, got map[string]any) {
	t.Helper()
	want, _ := got["expected"].(string)
	if want == "" || out != want+"\n" {
		t.Fatalf("tsv output %q, want the bare principal ID %q", out, want)
	}
}

func secretIDs(user, pass string) func(*testing.T, string, map[string]any) {
	return func(t *testing.T, out string, got map[string]any) {
		t.Helper()
		creds, _ := got["authCredentials"].([]any)
		if len(creds) != 1 {
			t.Fatalf("authCredentials: %v", got["authCredentials"])
		}
		c, _ := creds[0].(map[string]any)
		u, _ := c["usernameSecretIdentifier"].(string)
		p, _ := c["passwordSecretIdentifier"].(string)
		if !strings.HasSuffix(u, "/"+user) || !strings.HasSuffix(p, "/"+pass) {
			t.Fatalf("secret ids %q %q; output:\n%s", u, p, out)
		}
	}
}

func isEmpty(t *testing.T, out string, _ map[string]any) {
	t.Helper()
	if out != "" {
		t.Fatalf("want no output, got:\n%s", out)
	}
}

func isEmptyList(t *testing.T, out string, _ map[string]any) {
	t.Helper()
	if strings.TrimSpace(out) != "[]" {
		t.Fatalf("want [], got:\n%s", out)
	}
}

func listLen(n int) func(*testing.T, string, map[string]any) {
	return func(t *testing.T, out string, _ map[string]any) {
		t.Helper()
		var l []any
		if err := json.Unmarshal([]byte(out), &l); err != nil || len(l) != n {
			t.Fatalf("want a list of %d, got (%v):\n%s", n, err, out)
		}
	}
}
