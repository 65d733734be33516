package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	miniogo "github.com/minio/minio-go/v7"
	miniocreds "github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/arcacache/arca/internal/backup"
	"github.com/arcacache/arca/internal/testutil/arcaproc"
	"github.com/arcacache/arca/internal/testutil/minio"
	"github.com/arcacache/arca/internal/testutil/upstreamreg"
)

// pushBlobs pushes n random blobs of size bytes to repo.
func (a *arca) pushBlobs(t *testing.T, repo string, n, size int) {
	t.Helper()
	for i := range n {
		a.pushBlob(t, repo, randomBytes(uint64(5000+i), size))
	}
}

// cliCmd is the real arca CLI talking to endpoint with the test's admin token.
func cliCmd(t *testing.T, endpoint string, args ...string) *exec.Cmd {
	cmd := exec.Command(arcaBin, args...)
	home := t.TempDir()
	cmd.Env = append(os.Environ(), "HOME="+home, "ARCA_CONFIG_DIR="+home, "ARCA_ENDPOINT="+endpoint, "ARCA_TOKEN="+ptAdminToken)
	return cmd
}

// TestBackupProgressModes: on a pipe, `arca backup` prints plain progress
// lines on stderr and only the JSON result on stdout; on a terminal it
// draws a bar.
func TestBackupProgressModes(t *testing.T) {
	arcaproc.SkipUnlessSQLite(t, "arca backup (a VACUUM INTO snapshot of the embedded database)")
	a := startCachingArca(t, nil, nil)
	a.pushBlobs(t, "prog/blobs", 20, 64<<10)

	t.Run("pipe", func(t *testing.T) {
		cmd := cliCmd(t, a.URL(), "backup", "--to", filepath.Join(t.TempDir(), "b"), "-o", "json")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("backup: %v\n%s", err, stderr.String())
		}
		var res backup.Result
		if err := json.Unmarshal(stdout.Bytes(), &res); err != nil || res.Blobs != 20 {
			t.Errorf("stdout is not only the JSON result of 20 blobs: %v\n%s", err, stdout.String())
		}
		lines := stderr.String()
		for _, want := range []string{"backup: blobs: 0/20, 0 B/1.3 MiB", "backup: blobs: 20/20, 1.3 MiB/1.3 MiB"} {
			if !strings.Contains(lines, want) {
				t.Errorf("stderr has no line %q:\n%s", want, lines)
			}
		}
		if strings.Contains(lines, "\r") {
			t.Errorf("progress on a pipe has carriage returns (a bar):\n%q", lines)
		}
	})

	t.Run("terminal", func(t *testing.T) {
		checkTerminalProgress(t, cliCmd(t, a.URL(), "backup", "--to", filepath.Join(t.TempDir(), "b"), "-o", "none"), "backup", 20)
	})
}

// TestBackupInterrupted: Ctrl-C during a backup stops it, says how far it
// got, keeps no half snapshot; running it again finishes the copy
// without copying again what was copied.
func TestBackupInterrupted(t *testing.T) {
	arcaproc.SkipUnlessSQLite(t, "arca backup (a VACUUM INTO snapshot of the embedded database)")
	a := startCachingArca(t, nil, nil)
	const n = 40
	a.pushBlobs(t, "prog/many", n, 16<<10)
	// A slow front: each blob download takes 50ms. The interrupt comes
	// when the second blob is asked for: blobs are copied one after the
	// other, so one is copied, and most are not (a fixed wait could see
	// none or all copied on a loaded or an idle machine).
	target, _ := url.Parse(a.URL())
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ErrorLog = log.New(io.Discard, "", 0) // the interrupt cancels a download
	var blobGETs atomic.Int32
	second := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/backup/blobs/") {
			if r.Method == http.MethodGet && blobGETs.Add(1) == 2 {
				close(second)
			}
			time.Sleep(50 * time.Millisecond)
		}
		rp.ServeHTTP(w, r)
	}))
	defer slow.Close()

	dir := filepath.Join(t.TempDir(), "b")
	cmd := cliCmd(t, slow.URL, "backup", "--to", dir, "-o", "json")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var lines []string
	sc := bufio.NewScanner(stderr)
	go func() {
		<-second
		_ = cmd.Process.Signal(syscall.SIGINT)
	}()
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 130 {
		t.Fatalf("interrupted backup: %v, want exit status 130\n%s", err, strings.Join(lines, "\n"))
	}
	all := strings.Join(lines, "\n")
	var copied int
	for _, l := range lines {
		if _, err := fmt.Sscanf(l, "backup: interrupted after copying %d of", &copied); err == nil {
			break
		}
	}
	if !strings.Contains(all, fmt.Sprintf("of %d blobs", n)) || !strings.Contains(all, "the last complete backup in "+dir+" is intact") || copied == 0 || copied == n {
		t.Errorf("interrupted backup says (copied %d):\n%s", copied, all)
	}
	if stdout.Len() != 0 {
		t.Errorf("interrupted backup printed a result: %s", stdout.String())
	}
	if _, err := os.Stat(filepath.Join(dir, backup.DBFile)); !os.IsNotExist(err) {
		t.Errorf("interrupted first backup left a snapshot (%v)", err)
	}
	res := a.backupResult(t, "backup", "--to", dir)
	if res.Blobs != n || res.CopiedBlobs != n-copied {
		t.Errorf("backup after the interrupt: %d blobs, %d copied; want %d, %d", res.Blobs, res.CopiedBlobs, n, n-copied)
	}
}

// TestCacheSyncProgress: `arca cache sync` of a slow upstream shows
// progress on stderr (lines on a pipe) and prints the result on stdout.
func TestCacheSyncProgress(t *testing.T) {
	up := upstreamreg.Start(t, upstreamreg.Options{})
	seedImage(t, up, "org/tool", "1.0", newImage(t, 5100, "amd64", 1000))
	proxy := upstreamreg.NewFaultProxy(t, up)
	a := startCachingArca(t, []string{proxy.Host()}, nil)
	a.cacheRule(t, "tool-sync", proxy.Host()+"/org/tool", "tool", "--sync", "ActiveSync", "--yes")
	proxy.Inject(upstreamreg.Fault{PathContains: "/manifests/", Delay: 1500 * time.Millisecond, Count: -1})

	cmd := cliCmd(t, a.URL(), "cache", "sync", "-r", "default", "-n", "tool-sync", "--tag", "1.0")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("cache sync: %v\n%s", err, stderr.String())
	}
	for _, want := range []string{"cache sync: tag 1.0: 0/1", "cache sync: tag 1.0: 1/1"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr has no line %q:\n%s", want, stderr.String())
		}
	}
	var v map[string]any
	if err := json.Unmarshal(stdout.Bytes(), &v); err != nil {
		t.Errorf("stdout is not only the JSON result: %v\n%s", err, stdout.String())
	}
}

// TestCopyStoreProgressModes: `arca copy-store` shows its blob and
// metadata copy as plain progress lines on a pipe and as a bar on a
// terminal; stdout keeps only the result line.
func TestCopyStoreProgressModes(t *testing.T) {
	src := t.TempDir()
	a := &arca{arcaproc.Start(t, arcaproc.Options{Bin: arcaBin, DataDir: src, Args: []string{"--metadata", "", "--blobs", ""}})}
	a.pushBlobs(t, "prog/copy", 20, 64<<10)
	a.Stop()
	copyStore := func() *exec.Cmd {
		return exec.Command(arcaBin, "copy-store", "--from-data-dir", src, "--to-data-dir", filepath.Join(t.TempDir(), "dst"))
	}

	t.Run("pipe", func(t *testing.T) {
		cmd := copyStore()
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("copy-store: %v\n%s", err, stderr.String())
		}
		if got := stdout.String(); got != "copied metadata from sqlite to sqlite\n" {
			t.Errorf("stdout %q, want only the result line", got)
		}
		lines := stderr.String()
		for _, want := range []string{
			"copy-store: blobs: 0/20, 0 B/1.3 MiB", "copy-store: blobs: 20/20, 1.3 MiB/1.3 MiB",
			"copy-store: metadata rows: 0/", "copy-store: blobs: 20 (1310720 bytes), 20 copied",
		} {
			if !strings.Contains(lines, want) {
				t.Errorf("stderr has no line %q:\n%s", want, lines)
			}
		}
		if m := regexp.MustCompile(`copy-store: metadata rows: (\d+)/(\d+) `).FindAllStringSubmatch(lines, -1); len(m) < 2 || m[len(m)-1][1] != m[len(m)-1][2] || m[0][2] == "0" {
			t.Errorf("metadata rows progress does not reach its total: %v\n%s", m, lines)
		}
		if strings.Contains(lines, "\r") {
			t.Errorf("progress on a pipe has carriage returns (a bar):\n%q", lines)
		}
	})

	t.Run("terminal", func(t *testing.T) {
		checkTerminalProgress(t, copyStore(), "copy-store", 20)
	})
}

// TestCopyStoreInterrupted: Ctrl-C during `arca copy-store` stops it with
// exit status 130 and says how many blobs were done; the rerun copies
// only the rest.
func TestCopyStoreInterrupted(t *testing.T) {
	src := t.TempDir()
	a := &arca{arcaproc.Start(t, arcaproc.Options{Bin: arcaBin, DataDir: src, Args: []string{"--metadata", "", "--blobs", ""}})}
	const n = 40
	a.pushBlobs(t, "prog/move", n, 16<<10)
	a.Stop()
	m := minio.Start(t)
	bucket, err := m.NewBucket(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// A slow front for MinIO: each write takes 20ms, so the copy is under
	// way when the interrupt comes. (SigV4 signs the Host the client
	// dialled, which the proxy passes on.)
	target, _ := url.Parse(m.Endpoint())
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ErrorLog = log.New(io.Discard, "", 0)
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			time.Sleep(20 * time.Millisecond)
		}
		rp.ServeHTTP(w, r)
	}))
	defer slow.Close()
	dst := filepath.Join(t.TempDir(), "dst")
	copyStore := func(endpoint string) *exec.Cmd {
		blobsURL := strings.Replace(m.BlobsURL(bucket, "moved"), m.Endpoint(), endpoint, 1)
		cmd := exec.Command(arcaBin, "copy-store", "--from-data-dir", src, "--to-data-dir", dst, "--to-blobs", blobsURL)
		cmd.Env = append(os.Environ(), m.Env()...)
		return cmd
	}

	cmd := copyStore(slow.URL)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Interrupt once a few blobs are in the bucket.
	mc, err := miniogo.New(target.Host, &miniogo.Options{Creds: miniocreds.NewStaticV4(m.AccessKey, m.SecretKey, "")})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			landed := 0
			for o := range mc.ListObjects(context.Background(), bucket, miniogo.ListObjectsOptions{Prefix: "moved/blobs/", Recursive: true}) {
				if o.Err == nil {
					landed++
				}
			}
			if landed >= 3 {
				break
			}
		}
		_ = cmd.Process.Signal(syscall.SIGINT)
	}()
	var lines []string
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	err = cmd.Wait()
	all := strings.Join(lines, "\n")
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 130 {
		t.Fatalf("interrupted copy-store: %v, want exit status 130\n%s", err, all)
	}
	var done, total, copied int
	for _, l := range lines {
		if _, err := fmt.Sscanf(l, "copy-store: interrupted after %d of %d blobs (%d copied", &done, &total, &copied); err == nil {
			break
		}
	}
	if total != n || copied == 0 || copied == n || !strings.Contains(all, "run the same command again to go on") {
		t.Fatalf("interrupted copy-store says (%d of %d done, %d copied):\n%s", done, total, copied, all)
	}
	t.Logf("interrupted after %d of %d blobs", copied, n)

	out, err := copyStore(m.Endpoint()).CombinedOutput()
	if err != nil {
		t.Fatalf("copy-store after the interrupt: %v\n%s", err, out)
	}
	var blobs, again, there int
	for _, l := range strings.Split(string(out), "\n") {
		if i := strings.Index(l, "), "); strings.HasPrefix(l, "copy-store: blobs: ") && i > 0 {
			_, _ = fmt.Sscanf(l[len("copy-store: blobs: "):], "%d", &blobs)
			_, _ = fmt.Sscanf(l[i+3:], "%d copied, %d already there", &again, &there)
		}
	}
	// The blob in flight at the interrupt may have landed all the same.
	if blobs != n || again+there != n || there < copied {
		t.Errorf("rerun: %d blobs, %d copied, %d already there; want %d, at least %d already there:\n%s", blobs, again, there, n, copied, out)
	}
}

// checkTerminalProgress runs cmd on a pseudo-terminal and checks that its
// progress for name's blobs is a bar (items, bytes, percentage), not lines.
func checkTerminalProgress(t *testing.T, cmd *exec.Cmd, name string, blobs int) {
	t.Helper()
	tty, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 40, Cols: 120})
	if err != nil {
		t.Fatal(err)
	}
	defer tty.Close()
	var out bytes.Buffer
	_, _ = io.Copy(&out, tty) // until the command exits (EIO)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("%s on a terminal: %v\n%s", name, err, out.String())
	}
	s := out.String()
	if !strings.Contains(s, "\r") || !strings.Contains(s, fmt.Sprintf("%s: blobs %d/%d", name, blobs, blobs)) || !strings.Contains(s, "100%") || !strings.Contains(s, "MiB") {
		t.Errorf("no progress bar with items, bytes and percentage on the terminal:\n%q", s)
	}
	if strings.Contains(s, fmt.Sprintf("%s: blobs: 0/%d", name, blobs)) {
		t.Errorf("plain progress lines on a terminal:\n%q", s)
	}
}
