package metadata

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

func openTest(t *testing.T) *SQLite {
	t.Helper()
	s, err := OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestManifestsTagsReferrers(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	layer := digest.FromString("layer")
	if err := s.LinkBlob(ctx, "r", "repo", layer, 5); err != nil {
		t.Fatal(err)
	}
	if size, err := s.BlobSize(ctx, "r", "repo", layer); err != nil || size != 5 {
		t.Fatalf("blob size %d %v", size, err)
	}
	if _, err := s.BlobSize(ctx, "other", "repo", layer); !errors.Is(err, ErrNotFound) {
		t.Fatalf("registries must not share links: %v", err)
	}
	m := Manifest{Registry: "r", Repo: "repo", Digest: digest.FromString("m"), MediaType: "mt", Size: 10,
		Refs: []Ref{{Digest: layer, Kind: RefBlob}}}
	if err := s.PutManifest(ctx, m, "v1", "latest"); err != nil {
		t.Fatal(err)
	}
	missing, err := s.MissingRefs(ctx, "r", "repo", []Ref{{layer, RefBlob}, {digest.FromString("x"), RefBlob}, {m.Digest, RefManifest}})
	if err != nil || len(missing) != 1 || missing[0].Digest != digest.FromString("x") {
		t.Fatalf("missing %v %v", missing, err)
	}
	sig := Manifest{Registry: "r", Repo: "repo", Digest: digest.FromString("sig"), MediaType: "mt", Size: 3,
		ArtifactType: "application/vnd.cncf.notary.signature", Subject: m.Digest, Annotations: map[string]string{"a": "b"}}
	if err := s.PutManifest(ctx, sig); err != nil {
		t.Fatal(err)
	}
	refs, err := s.Referrers(ctx, "r", "repo", m.Digest, "")
	if err != nil || len(refs) != 1 || refs[0].Annotations["a"] != "b" {
		t.Fatalf("referrers %+v %v", refs, err)
	}
	if refs, _ := s.Referrers(ctx, "r", "repo", m.Digest, "other/type"); len(refs) != 0 {
		t.Fatalf("filter: %+v", refs)
	}
	tags, more, err := s.ListTags(ctx, "r", "repo", "", 1)
	if err != nil || !more || len(tags) != 1 || tags[0] != "latest" {
		t.Fatalf("tags %v %v %v", tags, more, err)
	}
	if err := s.DeleteManifest(ctx, "r", "repo", m.Digest); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetTag(ctx, "r", "repo", "v1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("tag survived manifest delete: %v", err)
	}
	if err := s.DeleteManifest(ctx, "r", "repo", m.Digest); !errors.Is(err, ErrNotFound) {
		t.Fatalf("double delete: %v", err)
	}
}

func TestTagMovesAndTouch(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	a := Manifest{Registry: "r", Repo: "x", Digest: digest.FromString("a"), MediaType: "mt", Size: 1}
	b := Manifest{Registry: "r", Repo: "x", Digest: digest.FromString("b"), MediaType: "mt", Size: 1}
	s.PutManifest(ctx, a, "t")
	s.PutManifest(ctx, b, "t")
	tg, err := s.GetTag(ctx, "r", "x", "t")
	if err != nil || tg.Digest != b.Digest {
		t.Fatalf("tag %v %v", tg, err)
	}
	if err := s.TouchTag(ctx, "r", "x", "t"); err != nil {
		t.Fatal(err)
	}
}

// Concurrent writers queue on the single write connection instead of
// failing with SQLITE_BUSY.
func TestConcurrentWrites(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := 0; i < 64; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			m := Manifest{Registry: "r", Repo: fmt.Sprintf("repo%d", i%4), Digest: digest.FromString(fmt.Sprint(i)), MediaType: "mt", Size: 1}
			if err := s.PutManifest(ctx, m, fmt.Sprintf("t%d", i)); err != nil {
				errs <- err
			}
			if _, _, err := s.ListTags(ctx, "r", m.Repo, "", 0); err != nil {
				errs <- err
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	repos, _, _ := s.ListRepositories(ctx, "r", "", 0)
	if len(repos) != 4 {
		t.Fatalf("repos %v", repos)
	}
}

func TestRateLimits(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	src := RateLimitSource("default/hub", "docker.io")
	if _, err := s.GetRateLimit(ctx, src); !errors.Is(err, ErrNotFound) {
		t.Fatalf("empty: %v", err)
	}
	now := time.Now().Truncate(time.Millisecond)
	s.RecordRateLimit(ctx, src, RateLimit{Limit: 100, Remaining: 80, Window: 6 * time.Hour, ObservedAt: now})
	// An older observation (another replica, late) does not win.
	s.RecordRateLimit(ctx, src, RateLimit{Limit: 100, Remaining: 99, Window: 6 * time.Hour, ObservedAt: now.Add(-time.Minute)})
	rl, err := s.GetRateLimit(ctx, src)
	if err != nil || rl.Remaining != 80 || rl.Window != 6*time.Hour || !rl.ObservedAt.Equal(now) {
		t.Fatalf("got %+v %v", rl, err)
	}
}

// A database migrated by a newer arca is refused, naming both versions,
// and left as it was.
func TestOpenRefusesNewerSchema(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "arca.db")
	s, err := OpenSQLite(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	next := SchemaVersion() + 1
	if _, err := s.w.ExecContext(ctx, `INSERT INTO schema_migrations(version) VALUES (?)`, next); err != nil {
		t.Fatal(err)
	}
	s.Close()
	_, err = OpenSQLite(ctx, path)
	if !errors.Is(err, ErrSchemaNewer) {
		t.Fatalf("open of a schema at version %d: %v, want ErrSchemaNewer", next, err)
	}
	for _, want := range []string{path, fmt.Sprintf("version %d", next), fmt.Sprintf("up to %d", SchemaVersion())} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("error is not one line: %q", err)
	}
}

// An upload row keeps the session's progress; saving is conditional on
// the offset the writer started from, so one of two writers wins.
func TestUploadState(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	if _, _, err := s.LoadUploadState(ctx, "nope-nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("load of no session: %v", err)
	}
	if err := s.SaveUploadState(ctx, "nope-nope", 0, 1, nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("save of no session: %v", err)
	}
	if err := s.CreateUpload(ctx, "reg", "repo", "sess-0001"); err != nil {
		t.Fatal(err)
	}
	if size, st, err := s.LoadUploadState(ctx, "sess-0001"); err != nil || size != 0 || st != nil {
		t.Fatalf("new session: %d %q %v", size, st, err)
	}
	if err := s.SaveUploadState(ctx, "sess-0001", 0, 10, []byte("ten")); err != nil {
		t.Fatal(err)
	}
	if err := s.SaveUploadState(ctx, "sess-0001", 0, 7, []byte("seven")); !errors.Is(err, ErrConflict) {
		t.Fatalf("second writer from offset 0: %v, want ErrConflict", err)
	}
	if size, st, err := s.LoadUploadState(ctx, "sess-0001"); err != nil || size != 10 || string(st) != "ten" {
		t.Fatalf("after the race: %d %q %v", size, st, err)
	}
}
