package seedtest

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/arcacache/arca/internal/testutil/upstreamreg"
)

// TestPlantedSecretsNeverShown plants secret values in the server's
// environment and in a file, references them from credential sets, and
// checks that after every kind of CLI call none of the values appears in
// the CLI's output, the server's log or any file of its data directory,
// while the server did resolve them (the credential health says so).
func TestPlantedSecretsNeverShown(t *testing.T) {
	planted := []string{"planted-user-8c1e5a", "planted-pass-4d7f2b", "planted-file-9a3b6c"}
	secretFile := filepath.Join(t.TempDir(), "registry-password")
	if err := os.WriteFile(secretFile, []byte(planted[2]+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A real upstream (Debian's docker-registry with htpasswd) that accepts
	// only the planted user and the file's password: a Healthy credential
	// set proves the server resolved both references and used them.
	up := upstreamreg.Start(t, upstreamreg.Options{Auth: upstreamreg.Htpasswd, Username: planted[0], Password: planted[2]})
	srv := startServer(t, []string{"PLANTED_USER=" + planted[0], "PLANTED_PASS=" + planted[1]}, "--insecure-upstream", up.Host)

	var outputs []string
	run := func(stdin string, args ...string) result {
		t.Helper()
		r := srv.runArca(t, stdin, args...)
		outputs = append(outputs, r.stdout, r.stderr)
		if r.code != 0 {
			t.Fatalf("arca %s: exit %d: %s", strings.Join(args, " "), r.code, r.stderr)
		}
		return r
	}
	run("", "credential-set", "create", "-r", "myregistry", "-n", "ghcr-planted", "-l", "ghcr.io", "-u", "env://PLANTED_USER", "-p", "env://PLANTED_PASS")
	run("", "credential-set", "create", "-r", "myregistry", "-n", "local-planted", "-l", up.Host, "-u", "env://PLANTED_USER", "-p", "file://"+secretFile)
	run("", "credential-set", "create", "-r", "myregistry", "-n", "wrong-pass", "-l", up.Host, "-u", "env://PLANTED_USER", "-p", "env://PLANTED_PASS")
	run("", "credential-set", "create", "-r", "myregistry", "-n", "broken-set", "-l", up.Host, "-u", "env://PLANTED_USER", "-p", "env://NOT_SET_ANYWHERE")
	run("", "credential-set", "update", "-r", "myregistry", "-n", "ghcr-planted", "-p", "file://"+secretFile)
	run("", "cache", "create", "-r", "myregistry", "-n", "ghcr-app", "-s", "ghcr.io/org/app", "-t", "app", "-c", "ghcr-planted")
	for _, format := range []string{"json", "jsonc", "yaml", "table", "tsv"} {
		run("", "credential-set", "list", "-r", "myregistry", "-o", format)
		run("", "credential-set", "show", "-r", "myregistry", "-n", "local-planted", "-o", format)
		run("", "cache", "list", "-r", "myregistry", "-o", format)
	}
	run("", "credential-set", "show", "-r", "myregistry", "-n", "ghcr-planted", "--query", "authCredentials[0]")

	// The server resolved the references: healthy where they resolve,
	// unhealthy (with a message naming no value) where one does not.
	health := func(name string) map[string]any {
		r := run("", "credential-set", "show", "-r", "myregistry", "-n", name, "--query", "authCredentials[0].credentialHealth")
		var h map[string]any
		if err := json.Unmarshal([]byte(r.stdout), &h); err != nil {
			t.Fatalf("credentialHealth of %s: %v\n%s", name, err, r.stdout)
		}
		return h
	}
	if h := health("local-planted"); h["status"] != "Healthy" {
		t.Errorf("local-planted health = %v, want Healthy (env and file references resolved, upstream login accepted)", h)
	}
	for _, name := range []string{"wrong-pass", "broken-set"} {
		if h := health(name); h["status"] != "Unhealthy" || h["errorMessage"] == "" {
			t.Errorf("%s health = %v, want Unhealthy with a message", name, h)
		} else {
			t.Logf("%s: %v", name, h)
		}
	}

	applyFile := filepath.Join(t.TempDir(), "arca.yaml")
	if err := os.WriteFile(applyFile, []byte("registry: myregistry\ncredentialSets:\n  - name: ghcr-planted\n    loginServer: ghcr.io\n"+
		"    usernameSecretId: env://PLANTED_USER\n    passwordSecretId: env://PLANTED_PASS\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	run("", "apply", "-f", applyFile, "--dry-run")
	run("", "apply", "-f", applyFile, "-o", "json")

	// A value typed where a reference belongs is refused without echo.
	r := srv.runArca(t, "", "credential-set", "update", "-r", "myregistry", "-n", "ghcr-planted", "-p", planted[1])
	outputs = append(outputs, r.stdout, r.stderr)
	if r.code == 0 {
		t.Fatal("a plain secret was accepted as a reference")
	}

	srv.Stop()
	searchSecrets(t, planted, srv, outputs)
}

// searchSecrets fails the test if any planted value is in the server's
// log, a file of its data directory, or any CLI output.
func searchSecrets(t *testing.T, planted []string, srv *server, outputs []string) {
	t.Helper()
	haystacks := map[string]string{"server log": srv.Logs()}
	for i, o := range outputs {
		haystacks[fmt.Sprintf("cli output #%d", i)] = o
	}
	_ = filepath.WalkDir(srv.DataDir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			b, _ := os.ReadFile(p)
			haystacks[p] = string(b)
		}
		return nil
	})
	for where, text := range haystacks {
		for _, v := range planted {
			if strings.Contains(text, v) {
				t.Errorf("secret value %q found in %s", v, where)
			}
		}
	}
	if len(haystacks) < 10 {
		t.Fatalf("only %d places searched", len(haystacks))
	}
}
