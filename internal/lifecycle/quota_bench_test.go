package lifecycle_test

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/arcacache/arca/internal/lifecycle"
	"github.com/arcacache/arca/internal/metadata"
)

// BenchmarkPushQuotaRead: the push quota's periodic usage read on a
// pull-through registry (SQLite) holding mostly cached content: 200,000
// cached blob links in 2,000 repositories, 2,000 pushed ones in 20. The
// read grouped every repository of the registry (RegistryUsage) before;
// PushedBytes sums the pushed repositories' rows only.
func BenchmarkPushQuotaRead(b *testing.B) {
	ctx := context.Background()
	path := filepath.Join(b.TempDir(), "m.db")
	s, err := metadata.OpenSQLite(ctx, path)
	if err != nil {
		b.Fatal(err)
	}
	s.Close()
	raw, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		b.Fatal(err)
	}
	tx, err := raw.Begin()
	if err != nil {
		b.Fatal(err)
	}
	exec := func(q string, args ...any) {
		if _, err := tx.Exec(q, args...); err != nil {
			b.Fatal(err)
		}
	}
	now := time.Now().UnixMicro()
	link := func(repo string, i int, pushed bool) {
		d := digest.FromString(fmt.Sprintf("%s/%d", repo, i)).String()
		exec(`INSERT INTO blobs(digest, size, created_at) VALUES ($1, $2, $3)`, d, 1000+i, now)
		exec(`INSERT INTO repo_blobs(registry, repo, digest) VALUES ('reg01', $1, $2)`, repo, d)
	}
	for r := range 2020 {
		repo, pushed := fmt.Sprintf("cached/%04d", r), r >= 2000
		if pushed {
			repo = fmt.Sprintf("mine/%02d", r-2000)
		}
		p := 0
		if pushed {
			p = 1
		}
		exec(`INSERT INTO repositories(registry, name, created_at, pushed) VALUES ('reg01', $1, $2, $3)`, repo, now, p)
		for i := range 100 {
			link(repo, i, pushed)
		}
	}
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
	raw.Close()
	if s, err = metadata.OpenSQLite(ctx, path); err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	want, err := s.PushedBytes(ctx, "reg01")
	if err != nil {
		b.Fatal(err)
	}
	b.Run("RegistryUsage", func(b *testing.B) {
		for b.Loop() {
			us, err := s.RegistryUsage(ctx, "reg01")
			if err != nil {
				b.Fatal(err)
			}
			if _, pushed := lifecycle.CachedBytes(us); pushed != want {
				b.Fatalf("pushed %d, want %d", pushed, want)
			}
		}
	})
	b.Run("PushedBytes", func(b *testing.B) {
		for b.Loop() {
			if n, err := s.PushedBytes(ctx, "reg01"); err != nil || n != want {
				b.Fatalf("pushed %d, %v; want %d", n, err, want)
			}
		}
	})
}
