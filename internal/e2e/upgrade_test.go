package e2e

import (
	"context"
	"database/sql"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/arcacache/arca/internal/testutil/arcaproc"
	"github.com/arcacache/arca/internal/testutil/freeport"

	_ "modernc.org/sqlite" // to write a newer schema version
)

// previousRelease is the commit whose data directory the upgrade test
// starts the new binary on: the last one before migration 5 (repositories
// marked pushed), so the upgrade runs a real migration. Move it forward to
// the last release when one changes the schema.
const previousRelease = "d3979ab4cbfe4f4c75c2e1ff6d0f1f1c85d654d4"

// buildAt builds cmd/arca as of commit into a temporary directory, from
// `git archive` of the repository this test runs in.
func buildAt(t *testing.T, commit string) string {
	t.Helper()
	root, err := arcaproc.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	src := t.TempDir()
	archive := exec.Command("sh", "-c", `git -C "$1" archive "$2" | tar -x -C "$3"`, "sh", root, commit, src)
	if out, err := archive.CombinedOutput(); err != nil {
		t.Fatalf("git archive %s (needs the repository's history): %v\n%s", commit, err, out)
	}
	bin := filepath.Join(t.TempDir(), "arca-"+commit[:7])
	build := exec.Command("go", "build", "-o", bin, "./cmd/arca")
	build.Dir = src
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building arca at %s: %v\n%s", commit, err, out)
	}
	return bin
}

// TestUpgradeFromPreviousRelease: a data directory written by the
// previous release (pushed images, tags) is served by this binary after
// its migrations ran, byte for byte; pushed content still blocks a cache
// rule over it.
func TestUpgradeFromPreviousRelease(t *testing.T) {
	arcaproc.SkipUnlessSQLite(t, "the embedded database file of a data directory")
	old := buildAt(t, previousRelease)
	dataDir := t.TempDir()

	// The previous release is told its port (it may not report one it
	// picked): a port taken meanwhile makes it exit, and it starts again.
	var (
		cmd    *exec.Cmd
		logs   *syncBuffer
		exited chan struct{}
	)
	addr, err := freeport.Retry(func(addr string) error {
		cmd = exec.Command(old, "serve", "--addr", addr, "--data-dir", dataDir)
		cmd.Env = append(os.Environ(), "ARCA_ADMIN_TOKEN="+ptAdminToken)
		logs, exited = &syncBuffer{}, nil
		cmd.Stdout, cmd.Stderr = logs, logs
		if err := cmd.Start(); err != nil {
			return err
		}
		exited = make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		err := arcaproc.WaitReady("http://"+addr+"/readyz", 30*time.Second, exited)
		if errors.Is(err, arcaproc.ErrExited) && freeport.InUse(logs.String()) {
			return freeport.ErrInUse
		}
		return err
	})
	defer func() {
		if exited != nil {
			_ = cmd.Process.Kill()
			<-exited
		}
	}()
	if err != nil {
		t.Fatalf("previous release not ready: %v\n%s", err, logs.String())
	}
	prev := &arca{&arcaproc.Proc{Addr: addr}}
	img, idx := newImage(t, 1100, "amd64", 300<<10, 1234), newImage(t, 1101, "arm64", 777)
	prev.pushImage(t, "team/app", "v1", img)
	prev.pushImage(t, "team/app", "arm", idx)
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("previous release did not stop on SIGTERM\n%s", logs.String())
	}

	// The previous release's blobs are in the data directory: the
	// filesystem backend, whatever ARCA_TEST_BLOBS says.
	a := &arca{arcaproc.Start(t, arcaproc.Options{Bin: arcaBin, DataDir: dataDir, Args: []string{"--blobs", ""},
		Env: []string{"ARCA_ADMIN_TOKEN=" + ptAdminToken}})}
	for tag, im := range map[string]*testImage{"v1": img, "arm": idx} {
		r := getCached(t, a.URL()+"/v2/team/app/manifests/"+tag, im.Digest())
		if string(r.Body) != string(im.Manifest) {
			t.Errorf("manifest %s differs after the upgrade", tag)
		}
		for _, b := range im.blobs() {
			a.checkBlob(t, "team/app", b)
		}
	}
	if tags, _ := a.tagsPaged(t, "team/app", 100); strings.Join(tags, ",") != "arm,v1" {
		t.Errorf("tags after the upgrade: %v, want [arm v1]", tags)
	}
	// Content pushed before the upgrade is pushed content: a rule over it
	// would hide it, and is refused.
	out, err := a.tryCLI("cache", "create", "-r", "default", "-n", "over-pushed", "-s", "127.0.0.1:1/team/app", "-t", "team/app", "-o", "none")
	if err == nil || !strings.Contains(out, "team/app") {
		t.Errorf("cache rule over repository pushed before the upgrade: err %v, output %q; want a refusal naming it", err, out)
	}
	// And the new binary still takes pushes.
	a.pushImage(t, "team/app", "v2", newImage(t, 1102, "amd64", 999))
	if r := do(t, "GET", a.URL()+"/v2/team/app/manifests/v2", map[string]string{"Accept": mtAcceptAll}, nil); r.Status != http.StatusOK {
		t.Errorf("push after the upgrade: %s", r)
	}
}

// TestRefusesNewerSchema: a data directory migrated by a newer arca makes
// serve exit at once with one line naming both schema versions.
func TestRefusesNewerSchema(t *testing.T) {
	arcaproc.SkipUnlessSQLite(t, "the embedded database file of a data directory")
	dataDir := t.TempDir()
	a := startArcaAt(t, "", dataDir)
	a.Stop()
	bumpSchema(t, filepath.Join(dataDir, "arca.db"))

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, arcaBin, "serve", "--addr", "127.0.0.1:0", "--data-dir", dataDir)
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("serve on a newer schema did not fail:\n%s", out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	last := lines[len(lines)-1]
	if !strings.HasPrefix(last, "arca: ") || !strings.Contains(last, "newer than this arca") || !strings.Contains(last, "schema version 1000") {
		t.Errorf("serve's last line %q: want one line saying the schema (version 1000) is newer than this arca", last)
	}
}

// bumpSchema records schema version 1000 in the database at path, as a
// far newer arca would.
func bumpSchema(t *testing.T, path string) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`INSERT INTO schema_migrations(version) VALUES (1000)`); err != nil {
		t.Fatal(err)
	}
}
