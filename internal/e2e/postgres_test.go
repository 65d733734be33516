package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/arcacache/arca/internal/testutil/arcaproc"
	"github.com/arcacache/arca/internal/testutil/pgtest"
)

// TestServePostgresCredentials: serve --metadata postgres://USER@... takes
// the password from PGPASSWORD or a .pgpass file (PGPASSFILE), serves
// pushes and pulls with it, and never writes the password: not in the
// logs of a working server, not in the error of a wrong password, not
// when the password was in the URL itself.
func TestServePostgresCredentials(t *testing.T) {
	url, password := pgtest.NewPasswordDatabase(t)

	a := &arca{arcaproc.Start(t, arcaproc.Options{Bin: arcaBin, Args: []string{"--metadata", url, "--log-level", "debug"},
		Env: []string{"PGPASSWORD=" + password}})}
	im := newImage(t, 11, "amd64", 1000, 2000)
	a.pushImage(t, "pg/app", "v1", im)
	checkImage(t, a, "pg/app", "v1", im)
	a.Stop()
	if strings.Contains(a.Logs(), password) {
		t.Fatal("the server's log holds the database password")
	}

	// A restart on the same database finds the image, password from .pgpass.
	pgpass := filepath.Join(t.TempDir(), "pgpass")
	host := strings.TrimPrefix(strings.SplitN(url, "/", 4)[2], pgtest.PasswordUser+"@")
	if err := os.WriteFile(pgpass, []byte(host+":*:"+pgtest.PasswordUser+":"+password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b := &arca{arcaproc.Start(t, arcaproc.Options{Bin: arcaBin, DataDir: a.DataDir, Args: []string{"--metadata", url}, Env: []string{"PGPASSFILE=" + pgpass}})}
	checkImage(t, b, "pg/app", "v1", im)
	b.Stop()

	// Wrong passwords: serve exits with one line that names the database
	// but holds neither password.
	inURL := strings.Replace(url, pgtest.PasswordUser+"@", pgtest.PasswordUser+":"+password+"-in-url@", 1)
	for _, tc := range []struct {
		name, url, env, secret string
	}{
		{"PGPASSWORD", url, "PGPASSWORD=" + password + "-wrong", password + "-wrong"},
		{"in the URL", inURL, "PGPASSWORD=", password + "-in-url"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		cmd := exec.CommandContext(ctx, arcaBin, "serve", "--addr", "127.0.0.1:0", "--data-dir", t.TempDir(), "--metadata", tc.url)
		cmd.Env = append(os.Environ(), tc.env, "PGPASSFILE=/nonexistent")
		out, err := cmd.CombinedOutput()
		cancel()
		if err == nil {
			t.Fatalf("%s: serve with a wrong password did not fail:\n%s", tc.name, out)
		}
		if strings.Contains(string(out), tc.secret) {
			t.Errorf("%s: serve's output holds the password:\n%s", tc.name, out)
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		last := lines[len(lines)-1]
		if !strings.HasPrefix(last, "arca: ") || !strings.Contains(last, pgtest.PasswordUser+"@127.0.0.1") || !strings.Contains(last, "password") {
			t.Errorf("%s: last line %q: want one arca: line naming the database and the failed password authentication", tc.name, last)
		}
	}
}

// TestCopyStoreToPostgres moves an embedded instance's metadata to
// PostgreSQL: arca migrate prepares the database, copy-store copies (twice:
// a rerun resumes and changes nothing), and serve on the same data dir's
// blobs with --metadata serves what was pushed before.
func TestCopyStoreToPostgres(t *testing.T) {
	url := pgtest.NewDatabase(t)
	dataDir := t.TempDir()
	// --metadata "": the source is the embedded store whatever ARCA_TEST_METADATA says.
	a := &arca{arcaproc.Start(t, arcaproc.Options{Bin: arcaBin, DataDir: dataDir, Args: []string{"--metadata", ""}})}
	im := newImage(t, 12, "arm64", 3000, 100)
	a.pushImage(t, "moved/app", "v1", im)
	a.Stop()

	arcaCmd := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, arcaBin, args...).CombinedOutput()
		return string(out), err
	}
	if out, err := arcaCmd("migrate", "--metadata", url); err != nil || !strings.Contains(out, "metadata (postgres) at schema version") {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	if out, err := arcaCmd("copy-store", "--from-data-dir", dataDir, "--to-metadata", url); err == nil || !strings.HasPrefix(out, "arca: ") {
		t.Fatalf("copy-store without --metadata-only: %v\n%s", err, out)
	}
	if out, err := arcaCmd("copy-store", "--from-data-dir", t.TempDir(), "--to-metadata", url, "--metadata-only"); err == nil {
		t.Fatalf("copy-store from an empty dir: %v\n%s", err, out)
	}
	for range 2 {
		out, err := arcaCmd("copy-store", "--from-data-dir", dataDir, "--to-metadata", url, "--metadata-only")
		if err != nil || !strings.Contains(out, "manifests: 1 rows") || !strings.Contains(out, "copied metadata from sqlite to postgres") {
			t.Fatalf("copy-store: %v\n%s", err, out)
		}
	}
	b := &arca{arcaproc.Start(t, arcaproc.Options{Bin: arcaBin, DataDir: dataDir, Args: []string{"--metadata", url}})}
	checkImage(t, b, "moved/app", "v1", im)
	// Removing the embedded database proves the server reads PostgreSQL.
	b.Stop()
	if err := os.Remove(filepath.Join(dataDir, "arca.db")); err != nil {
		t.Fatal(err)
	}
	c := &arca{arcaproc.Start(t, arcaproc.Options{Bin: arcaBin, DataDir: dataDir, Args: []string{"--metadata", url}})}
	checkImage(t, c, "moved/app", "v1", im)
}
