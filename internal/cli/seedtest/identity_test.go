package seedtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/arcacache/arca/internal/testutil/arcaproc"
	"github.com/arcacache/arca/internal/testutil/oidcfixture"
)

// seedText reads a seed (skipping when the seeds are not beside the
// repository) so the commands run below are checked to be the seed's.
func seedText(t *testing.T, file string) string {
	t.Helper()
	root, err := arcaproc.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{filepath.Join(root, "..", "shared", "seeds"), filepath.Join(root, "..", "..", "shared", "seeds")} {
		if b, err := os.ReadFile(filepath.Join(dir, file)); err == nil {
			return string(b)
		}
	}
	t.Skip("shared/seeds not found beside the repository")
	return ""
}

// craneCmd runs crane (ARCA_TOOLS_BIN or PATH) with a private config.
func craneCmd(t *testing.T, home string, args ...string) string {
	t.Helper()
	bin := "crane"
	if d := os.Getenv("ARCA_TOOLS_BIN"); d != "" {
		bin = filepath.Join(d, "crane")
	}
	cmd := exec.Command(bin, append([]string{"--insecure"}, args...)...)
	cmd.Env = append(os.Environ(), "HOME="+home, "DOCKER_CONFIG="+filepath.Join(home, ".docker"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("crane %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// Seeds 000 and 001 end to end on two arca servers: A is the upstream
// registry (closed, holding myapp:latest), B the downstream. Every identity,
// role and registry command of the seeds runs verbatim with az → arca
// against A, the cache commands against B, and the pull that follows works.
// Two things stand in for Azure: the identity proves itself with a
// federated token file from a loopback OIDC issuer (a federated credential
// on A, a setup step: on Azure the managed identity is attached to the
// registry), and the source host upstreamregistry.azurecr.cn/.azurecr.io
// is A's loopback address (no DNS for it here).
func TestSeedIdentityCommandsAndPull(t *testing.T) {
	seed000, seed001 := seedText(t, "000_d9f0a0848340d9a4.txt"), seedText(t, "001_6ff0903f292b2582.txt")
	iss := oidcfixture.Start(t)
	const sub = "system:serviceaccount:arca:downstream"
	tokFile := filepath.Join(t.TempDir(), "azure-identity-token")
	if err := os.WriteFile(tokFile, []byte(iss.Token(t, sub, "api://AzureADTokenExchange", time.Hour)), 0o600); err != nil {
		t.Fatal(err)
	}
	a := &server{arcaproc.Start(t, arcaproc.Options{Bin: arcaBin, Closed: true, Args: []string{"--registry-name", "upstreamregistry", "--access-token-ttl", "3s"},
		Env: []string{"ARCA_ADMIN_TOKEN=" + adminToken}})}
	b := startServer(t, []string{"AZURE_FEDERATED_TOKEN_FILE=" + tokFile}, "--insecure-upstream", a.Addr)

	home := t.TempDir()
	a.mustArca(t, "update", "-n", "upstreamregistry", "--admin-enabled", "true")
	pw := strings.TrimSpace(a.mustArca(t, "credential", "show", "-n", "upstreamregistry", "--query", "passwords[0].value", "-o", "tsv").stdout)
	craneCmd(t, home, "auth", "login", a.Addr, "-u", "upstreamregistry", "-p", pw)
	craneCmd(t, home, "append", "-f", writeLayer(t), "-t", a.Addr+"/myapp:latest")
	digest := craneCmd(t, home, "digest", a.Addr+"/myapp:latest")

	vars := map[string]string{}
	run := func(srv *server, seed, text string, capture string) string {
		t.Helper()
		if !strings.Contains(seed, text) {
			t.Fatalf("not in the seed: %q", text)
		}
		args, err := toArgs(text, vars)
		if err != nil {
			t.Fatal(err)
		}
		r := srv.runArca(t, "y\n", args...)
		t.Logf("arca %s -> exit %d", strings.Join(args, " "), r.code)
		if r.code != 0 {
			t.Fatalf("arca %s: exit %d\n%s", strings.Join(args, " "), r.code, r.stderr)
		}
		if capture != "" {
			vars[capture] = strings.TrimSpace(r.stdout)
		}
		return r.stdout
	}
	fic := func(group, name string) {
		a.mustArca(t, "identity", "federated-credential", "create", "--identity-name", name, "-g", group, "-n", "downstream",
			"--issuer", iss.URL(), "--subject", sub)
	}

	// Seed 000 (legacy mode): AcrPull on the whole source registry.
	for k, v := range map[string]string{"<resource-group>": "identities", "<identity-name>": "cacheid000", "<rg>": "identities", "<sub-id>": "00000000-0000-0000-0000-000000000000",
		"<target-registry>": "myregistry", "<rule-name>": "acr-rule", "<source-registry>.azurecr.io": a.Addr, "<repo>": "myapp", "<target-repo>": "app000"} {
		vars[k] = v
	}
	run(a, seed000, "az identity create -g <resource-group> -n <identity-name>", "")
	vars["<identity-principal-id>"] = strings.TrimSpace(a.mustArca(t, "identity", "show", "-g", "identities", "-n", "cacheid000", "--query", "principalId", "-o", "tsv").stdout)
	vars["<source-registry-id>"] = strings.TrimSpace(a.mustArca(t, "show", "-n", "upstreamregistry", "--query", "id", "-o", "tsv").stdout)
	run(a, seed000, "az role assignment create --assignee <identity-principal-id> --role AcrPull --scope <source-registry-id>", "")
	fic("identities", "cacheid000")
	run(b, seed000, "az acr cache create -r <target-registry> -n <rule-name> -s <source-registry>.azurecr.io/<repo> -t <target-repo> \\\n  --assign-identity /subscriptions/<sub-id>/resourceGroups/<rg>/providers/Microsoft.ManagedIdentity/userAssignedIdentities/<identity-name>", "")
	if got := craneCmd(t, t.TempDir(), "digest", b.Addr+"/app000:latest"); got != digest {
		t.Fatalf("seed 000 pull through B: %s, want %s", got, digest)
	}

	// Seed 001 (ABAC mode): Container Registry Repository Reader on
	// repositories/myapp.
	run(a, seed001, "az identity create \\ --name MyACRCacheIdentity \\ --resource-group MyResourceGroup", "")
	run(a, seed001, "az identity show \\ --name MyACRCacheIdentity \\ --resource-group MyResourceGroup \\ --query 'principalId' \\ -o tsv", "IDENTITY_PRINCIPAL_ID")
	run(a, seed001, "az identity show \\ --name MyACRCacheIdentity \\ --resource-group MyResourceGroup \\ --query 'id' \\ -o tsv", "IDENTITY_RESOURCE_ID")
	run(a, seed001, "az acr update --name UpstreamRegistry --role-assignment-mode rbac-abac", "")
	run(a, seed001, "az acr show \\ --name UpstreamRegistry \\ --query 'id' \\ -o tsv", "UPSTREAM_ID")
	run(a, seed001, `az role assignment create \ --role "Container Registry Repository Reader" \ --assignee "$IDENTITY_PRINCIPAL_ID" \ --scope "$UPSTREAM_ID/repositories/myapp"`, "")
	fic("MyResourceGroup", "MyACRCacheIdentity")
	create := `az acr cache create \ -r MyRegistry \ -n MyRule \ -s upstreamregistry.azurecr.cn/myapp \ -t myapp \ --identity "$IDENTITY_RESOURCE_ID"`
	if !strings.Contains(seed001, create) {
		t.Fatalf("not in seed 001: %q", create)
	}
	run(b, strings.ReplaceAll(seed001, "upstreamregistry.azurecr.cn", a.Addr), strings.ReplaceAll(create, "upstreamregistry.azurecr.cn", a.Addr), "")
	run(b, seed001, "az acr cache show -r MyRegistry -n MyRule", "")
	// docker pull myregistry.azurecr.cn/myapp:latest
	if got := craneCmd(t, t.TempDir(), "digest", b.Addr+"/myapp:latest"); got != digest {
		t.Fatalf("seed 001 pull through B: %s, want %s", got, digest)
	}
	craneCmd(t, t.TempDir(), "pull", "--format", "oci", b.Addr+"/myapp:latest", t.TempDir())
	// In ABAC mode seed 000's AcrPull no longer counts (ACR ignores the
	// Acr* roles there): its rule is refused once B's access token from
	// before the switch (3 s on A) has expired.
	time.Sleep(4 * time.Second)
	r := b.runArca(t, "", "cache", "show", "-r", "myregistry", "-n", "acr-rule", "--query", "identityStatus.status", "-o", "tsv")
	if strings.TrimSpace(r.stdout) != "Unhealthy" {
		t.Errorf("seed 000 rule after rbac-abac: %q %s", r.stdout, r.stderr)
	}

	// Clean up as the seed does.
	vars["<cache-rule-name>"] = "MyRule"
	run(b, seed001, "az acr cache delete -r MyRegistry -n <cache-rule-name>", "")
	run(a, seed001, `az role assignment delete \ --role "Container Registry Repository Reader" \ --assignee "$IDENTITY_PRINCIPAL_ID" \ --scope "$UPSTREAM_ID/repositories/myapp"`, "")
	if got := strings.TrimSpace(a.mustArca(t, "role", "assignment", "list", "--assignee", vars["IDENTITY_PRINCIPAL_ID"], "--query", "length(@)", "-o", "tsv").stdout); got != "0" {
		t.Errorf("role assignments left after delete: %s", got)
	}
	run(a, seed001, "az identity delete \\ --name MyACRCacheIdentity \\ --resource-group MyResourceGroup", "")
	if r := a.runArca(t, "", "identity", "show", "-n", "MyACRCacheIdentity", "-g", "MyResourceGroup"); r.code == 0 || !strings.Contains(r.stderr, "ResourceNotFound") {
		t.Errorf("identity show after delete: %d %s", r.code, r.stderr)
	}
}

// writeLayer writes a small file for crane append.
func writeLayer(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, "layer.tar")
	cmd := exec.Command("tar", "-cf", p, "-C", dir, ".")
	if err := os.WriteFile(filepath.Join(dir, "hello.txt"), []byte("seed identity test"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("tar: %v %s", err, out)
	}
	return p
}
