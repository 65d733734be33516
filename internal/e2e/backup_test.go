package e2e

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	miniogo "github.com/minio/minio-go/v7"
	miniocreds "github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/arcacache/arca/internal/backup"
	"github.com/arcacache/arca/internal/testutil/arcaproc"
	"github.com/arcacache/arca/internal/testutil/minio"
)

// restoredBlobs: a restore writes an embedded data directory, blobs
// included, whatever backend the backed-up server had.
var restoredBlobs = []string{"--blobs", ""}

// backupResult runs an arca backup or restore command with -o json.
func (a *arca) backupResult(t *testing.T, args ...string) backup.Result {
	t.Helper()
	var res backup.Result
	out := a.cli(t, append(args, "-o", "json")...)
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("arca %s: output is not the JSON result: %v\n%s", strings.Join(args, " "), err, out)
	}
	return res
}

// snapshotContent lists what the snapshot in a backup directory records:
// each manifest as "repo@digest", and each repository's blobs.
func snapshotContent(t *testing.T, dir string) (manifests []string, blobs []string) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, backup.DBFile)+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, q := range []struct {
		sql string
		out *[]string
	}{
		{`SELECT repo || '@' || digest FROM manifests ORDER BY 1`, &manifests},
		{`SELECT repo || '@' || digest FROM repo_blobs ORDER BY 1`, &blobs},
	} {
		rows, err := db.Query(q.sql)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var s string
			if err := rows.Scan(&s); err != nil {
				t.Fatal(err)
			}
			*q.out = append(*q.out, s)
		}
		rows.Close()
	}
	return manifests, blobs
}

// TestBackupRestoreUnderLoad: an online backup taken while crane pushes
// and clients pull, then an incremental one, restored into a fresh data
// directory: the restored server serves every manifest of the snapshot
// byte for byte as the original does, and every blob.
func TestBackupRestoreUnderLoad(t *testing.T) {
	arcaproc.SkipUnlessSQLite(t, "arca backup (a VACUUM INTO snapshot of the embedded database)")
	a := startCachingArca(t, nil, nil)
	backupRestoreUnderLoad(t, a, filepath.Join(t.TempDir(), "backup"))
}

// TestBackupRestoreS3UnderLoad: the same with the backup in a real MinIO
// (arca backup --to s3://..., arca restore --from s3://...); then a blob
// altered in the bucket is refused at restore with its digest.
func TestBackupRestoreS3UnderLoad(t *testing.T) {
	arcaproc.SkipUnlessSQLite(t, "arca backup (a VACUUM INTO snapshot of the embedded database)")
	m := minio.Start(t)
	ctx := context.Background()
	bucket, err := m.NewBucket(ctx)
	if err != nil {
		t.Fatal(err)
	}
	a := startCachingArca(t, nil, nil)
	// The CLI gets the bucket's credentials as arca serve --blobs would.
	a.BlobEnv = append(slices.Clip(a.BlobEnv), m.Env()...)
	to := m.BlobsURL(bucket, "backups/arca")
	backupRestoreUnderLoad(t, a, to)

	mc, err := miniogo.New(strings.TrimPrefix(m.Endpoint(), "http://"), &miniogo.Options{Creds: miniocreds.NewStaticV4(m.AccessKey, m.SecretKey, "")})
	if err != nil {
		t.Fatal(err)
	}
	keys := mc.ListObjects(ctx, bucket, miniogo.ListObjectsOptions{Prefix: "backups/arca/", Recursive: true})
	var files, blobKeys []string
	for o := range keys {
		if o.Err != nil {
			t.Fatal(o.Err)
		}
		if strings.HasPrefix(o.Key, "backups/arca/blobs/sha256/") {
			blobKeys = append(blobKeys, o.Key)
		} else {
			files = append(files, o.Key)
		}
	}
	slices.Sort(files)
	if want := []string{"backups/arca/arca.db", "backups/arca/backup.json"}; !slices.Equal(files, want) || len(blobKeys) == 0 {
		t.Fatalf("bucket holds %v and %d blobs, want %v and the blobs", files, len(blobKeys), want)
	}
	key := blobKeys[len(blobKeys)/2]
	obj, err := mc.GetObject(ctx, bucket, key, miniogo.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(obj)
	obj.Close()
	if err != nil || len(b) == 0 {
		t.Fatalf("read %s: %v", key, err)
	}
	b[len(b)/2] ^= 0xff
	if _, err := mc.PutObject(ctx, bucket, key, bytes.NewReader(b), int64(len(b)), miniogo.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	restored := filepath.Join(t.TempDir(), "restored")
	out, err := a.tryCLI("restore", "--from", to, "--data-dir", restored)
	if digest := "sha256:" + path.Base(key); err == nil || !strings.Contains(out, digest) || !strings.Contains(out, "digest mismatch") {
		t.Errorf("restore from a bucket with %s altered: %v\n%s", digest, err, out)
	}
	if _, err := os.Stat(restored); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a refused restore left %s: %v", restored, err)
	}
}

// backupRestoreUnderLoad takes a backup of a into to while crane pushes
// and clients pull, then an incremental one, restores it into a fresh
// data directory and compares what the restored server serves.
func backupRestoreUnderLoad(t *testing.T, a *arca, dir string) {
	for _, p := range []string{"/arca/v1/backup/metadata", "/arca/v1/backup/blobs/" + sha([]byte("x"))} {
		if r := do(t, "GET", a.URL()+p, nil, nil); r.Status != http.StatusUnauthorized {
			t.Errorf("GET %s without the admin token: %s, want 401", p, r)
		}
	}
	base := make([]*testImage, 4)
	for i := range base {
		base[i] = newImage(t, uint64(3000+i), "amd64", 4<<20, 3000)
		a.pushImage(t, fmt.Sprintf("bk/base%d", i), "v1", base[i])
	}
	var layouts []string
	for i := range 24 {
		layouts = append(layouts, newImage(t, uint64(3100+i), "amd64", 256<<10, 100).writeLayout(t))
	}

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var mu sync.Mutex
	var loadErrs []string
	pushed, pulls := 0, 0
	c := crane(t)
	wg.Add(2)
	go func() { // pushes
		defer wg.Done()
		for i, l := range layouts {
			if ctx.Err() != nil {
				return
			}
			if out, err := c.tryCtx(ctx, "--insecure", "push", l, a.Ref(fmt.Sprintf("bk/load%d:v1", i))); err != nil {
				if ctx.Err() == nil {
					mu.Lock()
					loadErrs = append(loadErrs, fmt.Sprintf("crane push: %v %s", err, out))
					mu.Unlock()
				}
				return
			}
			mu.Lock()
			pushed++
			mu.Unlock()
		}
	}()
	go func() { // pulls
		defer wg.Done()
		for i := 0; ctx.Err() == nil; i++ {
			im := base[i%len(base)]
			repo := fmt.Sprintf("bk/base%d", i%len(base))
			if _, err := fetchVerified(a.URL()+"/v2/"+repo+"/manifests/v1", im.Digest()); err != nil {
				mu.Lock()
				loadErrs = append(loadErrs, err.Error())
				mu.Unlock()
				return
			}
			if _, err := fetchVerified(a.URL()+"/v2/"+repo+"/blobs/"+sha(im.Layers[0]), sha(im.Layers[0])); err != nil {
				mu.Lock()
				loadErrs = append(loadErrs, err.Error())
				mu.Unlock()
				return
			}
			mu.Lock()
			pulls++
			mu.Unlock()
		}
	}()
	time.Sleep(300 * time.Millisecond) // the load is under way
	mu.Lock()
	pushes0, pulls0 := pushed, pulls
	mu.Unlock()
	first := a.backupResult(t, "backup", "--to", dir)
	mu.Lock()
	t.Logf("first backup: %d blobs (%d bytes); during it %d pushes and %d pulls completed", first.Blobs, first.Bytes, pushed-pushes0, pulls-pulls0)
	mu.Unlock()
	time.Sleep(300 * time.Millisecond)
	cancel()
	wg.Wait()
	if len(loadErrs) > 0 {
		t.Fatalf("load during the backup failed: %v", loadErrs)
	}
	if first.CopiedBlobs != first.Blobs || first.Blobs < 4*3 {
		t.Errorf("first backup copied %d of %d blobs; want all, at least the 12 of the base images", first.CopiedBlobs, first.Blobs)
	}

	second := a.backupResult(t, "backup", "--to", dir)
	if second.CopiedBlobs != second.Blobs-first.Blobs {
		t.Errorf("incremental backup copied %d blobs; want only the %d new ones", second.CopiedBlobs, second.Blobs-first.Blobs)
	}
	t.Logf("incremental backup: %d blobs, %d copied", second.Blobs, second.CopiedBlobs)

	restored := filepath.Join(t.TempDir(), "restored")
	res := a.backupResult(t, "restore", "--from", dir, "--data-dir", restored)
	if res.CopiedBlobs != second.Blobs {
		t.Errorf("restore copied %d blobs, want %d", res.CopiedBlobs, second.Blobs)
	}
	// The restored arca.db is the backup's snapshot, copied verbatim.
	manifests, blobs := snapshotContent(t, restored)
	r := startArcaAt(t, "", restored, restoredBlobs...)
	if len(manifests) < len(base)+pushed {
		t.Errorf("backup holds %d manifests, want at least %d", len(manifests), len(base)+pushed)
	}
	for _, m := range manifests {
		repo, d, _ := strings.Cut(m, "@")
		want := do(t, "GET", a.URL()+"/v2/"+repo+"/manifests/"+d, map[string]string{"Accept": mtAcceptAll}, nil)
		got := do(t, "GET", r.URL()+"/v2/"+repo+"/manifests/"+d, map[string]string{"Accept": mtAcceptAll}, nil)
		if got.Status != http.StatusOK || string(got.Body) != string(want.Body) || sha(got.Body) != d {
			t.Errorf("restored %s: %d, %d bytes; the original serves %d bytes", m, got.Status, len(got.Body), len(want.Body))
		}
	}
	for _, b := range blobs {
		repo, d, _ := strings.Cut(b, "@")
		if _, err := fetchVerified(r.URL()+"/v2/"+repo+"/blobs/"+d, d); err != nil {
			t.Errorf("restored blob: %v", err)
		}
	}
	if tags, _ := r.tagsPaged(t, "bk/base0", 10); strings.Join(tags, ",") != "v1" {
		t.Errorf("restored tags of bk/base0: %v", tags)
	}
}

// TestRestoreRefusesCorruptBackup: an offline backup restores and serves;
// one whose blob was altered or lost is refused at restore, naming that
// blob's digest, and leaves no data directory behind.
func TestRestoreRefusesCorruptBackup(t *testing.T) {
	arcaproc.SkipUnlessSQLite(t, "arca backup (a VACUUM INTO snapshot of the embedded database)")
	dataDir := t.TempDir()
	a := startArcaAt(t, "", dataDir)
	im := newImage(t, 3200, "amd64", 100<<10)
	a.pushImage(t, "bk/app", "v1", im)
	a.Stop()
	layer := sha(im.Layers[0])
	blobFile := func(dir string) string {
		hex := strings.TrimPrefix(layer, "sha256:")
		return filepath.Join(dir, backup.BlobsDir, "blobs", "sha256", hex[:2], hex)
	}
	for _, tc := range []struct {
		name  string
		spoil func(path string) error
		says  string
	}{
		{"intact", nil, ""},
		{"flipped byte", func(p string) error {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			b[len(b)/2] ^= 0xff
			return os.WriteFile(p, b, 0o644)
		}, "digest mismatch"},
		{"missing", os.Remove, "missing from the backup"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "backup")
			if out, err := a.tryCLI(append([]string{"backup", "--data-dir", dataDir, "--to", dir, "-o", "none"}, a.BlobArgs...)...); err != nil {
				t.Fatalf("offline backup: %v\n%s", err, out)
			}
			restored := filepath.Join(t.TempDir(), "restored")
			if tc.spoil == nil {
				a.cli(t, "restore", "--from", dir, "--data-dir", restored, "-o", "none")
				checkImage(t, startArcaAt(t, "", restored, restoredBlobs...), "bk/app", "v1", im)
				return
			}
			if err := tc.spoil(blobFile(dir)); err != nil {
				t.Fatal(err)
			}
			out, err := a.tryCLI("restore", "--from", dir, "--data-dir", restored)
			if err == nil {
				t.Fatalf("restore of a corrupt backup succeeded:\n%s", out)
			}
			if !strings.Contains(out, layer) || !strings.Contains(out, tc.says) {
				t.Errorf("restore refused with %q; want it to name %s and say %q", out, layer, tc.says)
			}
			if _, err := os.Stat(restored); !os.IsNotExist(err) {
				t.Errorf("restore left %s behind (%v)", restored, err)
			}
		})
	}
}
