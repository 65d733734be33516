package seedtest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/arcacache/arca/internal/oci"
	"github.com/arcacache/arca/internal/testutil/upstreamreg"
)

const applyDoc = `registry: MyRegistry
credentialSets:
  - name: ghcr-creds
    loginServer: ghcr.io
    usernameSecretId: env://GHCR_USER
    passwordSecretId: vault://secret/arca/ghcr#token
cacheRules:
  - name: ghcr-app
    sourceRepository: ghcr.io/org/app
    targetRepository: app
    credentialSet: ghcr-creds
  - name: dotnet
    sourceRepository: mcr.microsoft.com/dotnet/*
    targetRepository: dotnet/*
  - name: acr-app
    sourceRepository: upstreamregistry.azurecr.io/myapp
    targetRepository: myapp
    identity: ` + uamiID + `
  - name: tools
    sourceRepository: quay.io/org/tools
    targetRepository: tools
    syncMode: ActiveSync
    syncReferrers: Enabled
    tags: {startsWith: "v1."}
    platforms: [linux/amd64, linux/arm64]
    excludeImageTypes: [application/vnd.docker.distribution.manifest.v1+prettyjws]
`

// TestApplyAgainstServer: apply creates, a second run changes nothing
// (so the comparison agrees with how the server echoes resources), an
// edit updates only what changed, and --prune deletes rules before sets.
func TestApplyAgainstServer(t *testing.T) {
	srv := startServer(t, nil)
	dir := t.TempDir()
	write := func(doc string) string {
		p := filepath.Join(dir, "arca.yaml")
		if err := os.WriteFile(p, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	file := write(applyDoc)
	srv.mustArca(t, "cache", "create", "-r", "myregistry", "-n", "stray", "-s", "public.ecr.aws/x/y", "-t", "y")

	r := srv.mustArca(t, "apply", "-f", file, "--prune", "--dry-run", "-o", "tsv")
	if r.stderr != "Plan: 5 to create, 0 to update, 1 to delete, 0 unchanged.\n" {
		t.Fatalf("dry-run: %q\n%s", r.stderr, r.stdout)
	}
	if got := srv.mustArca(t, "cache", "list", "-r", "myregistry", "--query", "length(@)", "-o", "tsv").stdout; got != "1\n" {
		t.Fatalf("dry-run changed the server: %d rules", len(got))
	}
	r = srv.mustArca(t, "apply", "-f", file, "--prune")
	if r.stderr != "Applied: 5 created, 0 updated, 1 deleted, 0 unchanged.\n" {
		t.Fatalf("apply: %q\n%s", r.stderr, r.stdout)
	}
	r = srv.mustArca(t, "apply", "-f", file, "--prune")
	if r.stderr != "No changes: 5 unchanged.\n" {
		t.Fatalf("second apply is not a no-op: %q\n%s", r.stderr, r.stdout)
	}
	got := srv.mustArca(t, "cache", "show", "-r", "myregistry", "-n", "tools", "--query", "artifactSyncFilters.tags.query", "-o", "tsv").stdout
	if got != "Tags | where Name startswith 'v1.'\n" {
		t.Fatalf("tools tag query = %q", got)
	}

	edited := strings.Replace(applyDoc, `startsWith: "v1."`, `startsWith: "v2."`, 1)
	edited = strings.Replace(edited, "    credentialSet: ghcr-creds\n", "", 1)
	edited = edited[:strings.Index(edited, "credentialSets:")] + edited[strings.Index(edited, "cacheRules:"):]
	r = srv.mustArca(t, "apply", "-f", write(edited), "--prune", "-o", "tsv")
	want := "update\tcredentialSet\tcacheRule\tghcr-app\nunchanged\tcacheRule\tdotnet\nunchanged\tcacheRule\tacr-app\nupdate\ttags\tcacheRule\ttools\ndelete\tcredentialSet\tghcr-creds\n"
	if r.stdout != want {
		t.Fatalf("edit plan:\n%s\nwant:\n%s", r.stdout, want)
	}
	if r := srv.mustArca(t, "apply", "-f", write(edited), "--prune"); r.stderr != "No changes: 4 unchanged.\n" {
		t.Fatalf("after edit: %q", r.stderr)
	}
}

// The estimate and sync endpoints come with active sync (issue 5); until
// the server implements them, the CLI reports so in one line.
func TestDryRunAndSyncAgainstServer(t *testing.T) {
	up := upstreamreg.Start(t, upstreamreg.Options{})
	amd64 := &oci.Platform{OS: "linux", Architecture: "amd64"}
	for _, tag := range []string{"1.0", "1.1", "2.0"} {
		up.PushImage(t, "org/other", tag, amd64, []byte("other "+tag))
	}
	up.PushImage(t, "org/tools", "1.0", amd64, []byte("tools 1.0"))
	srv := startServer(t, nil, "--insecure-upstream", up.Host)
	srv.mustArca(t, "cache", "create", "-r", "myregistry", "-n", "tools", "-s", up.Host+"/org/tools", "-t", "tools", "--sync", "activesync", "--yes")

	// --dry-run prints the estimate and creates nothing.
	r := srv.mustArca(t, "cache", "create", "-r", "myregistry", "-n", "other", "-s", up.Host+"/org/other", "-t", "other",
		"--sync", "activesync", "--tag-starts-with", "1.", "--dry-run", "--query", "join(' ', [to_string(totalCount), to_string(filteredCount), join(',', sort(results[].name))])", "-o", "tsv")
	if got := strings.TrimSpace(r.stdout); got != "3 2 1.0,1.1" {
		t.Fatalf("dry run: %q", got)
	}
	if got := srv.mustArca(t, "cache", "list", "-r", "myregistry", "--query", "[].name", "-o", "tsv").stdout; got != "tools\n" {
		t.Fatalf("--dry-run created something: %q", got)
	}
	// cache sync fetches the tag now and says what it fetched.
	r = srv.mustArca(t, "cache", "sync", "-r", "myregistry", "-n", "tools", "--tag", "1.0", "--query", "join(' ', [tag, result])", "-o", "tsv")
	if got := strings.TrimSpace(r.stdout); got != "1.0 synced" && got != "1.0 unchanged" {
		t.Fatalf("cache sync: %q", got)
	}
	// A tag the upstream does not have fails with one line.
	bad := srv.runArca(t, "", "cache", "sync", "-r", "myregistry", "-n", "tools", "--tag", "9.9")
	checkOneLineError(t, "arca cache sync --tag 9.9", bad)
}
