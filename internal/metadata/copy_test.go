package metadata

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/arcacache/arca/internal/armtime"
	"github.com/arcacache/arca/internal/rules"
	"github.com/arcacache/arca/internal/testutil/pgtest"
)

// Every table of the schema is copied or knowingly skipped: a table added
// by a later migration cannot be forgotten by copy-store.
func TestCopyCoversEveryTable(t *testing.T) {
	ctx := context.Background()
	s, err := OpenSQLite(ctx, filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rows, err := s.(*db).r.QueryContext(ctx, `SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(copySkipped, name) && !slices.ContainsFunc(copyTables, func(c copyTable) bool { return c.name == name }) {
			t.Errorf("table %s is neither copied nor skipped by Copy", name)
		}
	}
}

// Copy carries everything from the embedded store to PostgreSQL and back;
// running it again (a resumed copy) changes nothing.
func TestCopyBetweenEngines(t *testing.T) {
	pgtest.SkipIfMissing(t)
	ctx := context.Background()
	lite, err := OpenSQLite(ctx, filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer lite.Close()
	fill(t, lite)
	pg, err := OpenPostgres(ctx, pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	back, err := OpenSQLite(ctx, filepath.Join(t.TempDir(), "back.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	total, err := CountCopyRows(ctx, lite)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		counts := map[string]int64{}
		if err := Copy(ctx, lite, pg, func(table string, n int64) { counts[table] = n }); err != nil {
			t.Fatal(err)
		}
		if counts["blobs"] != 1201 || counts["tags"] != 1 || counts["cache_rules"] != 1 {
			t.Fatalf("copied rows: %v", counts)
		}
		var sum int64
		for _, n := range counts {
			sum += n
		}
		if sum != total {
			t.Errorf("CountCopyRows = %d, but Copy copied %d rows", total, sum)
		}
		if err := Copy(ctx, pg, back, nil); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range []Store{pg, back} {
		check(t, s)
	}
}

func fill(t *testing.T, s Store) {
	t.Helper()
	ctx := context.Background()
	var refs []Ref
	for i := range 1200 {
		d := digest.FromString(fmt.Sprint(i))
		if err := s.LinkBlob(ctx, "default", "app", d, int64(i)); err != nil {
			t.Fatal(err)
		}
		refs = append(refs, Ref{Digest: d, Kind: RefBlob})
	}
	m := Manifest{Registry: "default", Repo: "app", Digest: digest.FromString("m"), MediaType: "mt", Size: 9, Refs: refs[:3]}
	if err := s.PutManifest(ctx, m, "v1"); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkPushed(ctx, "default", "app"); err != nil {
		t.Fatal(err)
	}
	err := s.UpdateRules(ctx, "default", func(tx RulesTx) error {
		return tx.PutCacheRule(rules.Rule{Name: "Hub", Source: "docker.io/*", Target: "hub/*", ProvisioningState: rules.StateSucceeded,
			CreatedAt: time.Unix(1700000000, 123000).UTC()})
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.AddAudit(ctx, AuditEntry{At: armtime.Of(time.Now()), Who: "admin", Action: "create", Resource: "/x", Result: "ok"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateToken(ctx, "default", "CI", func(tk *Token, _ bool) error { tk.Status = "enabled"; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := s.PutSyncRun(ctx, SyncRun{Registry: "default", Rule: "Hub", RunID: "r", Result: "Succeeded", StartedAt: time.Unix(1700000000, 0)}); err != nil {
		t.Fatal(err)
	}
}

func check(t *testing.T, s Store) {
	t.Helper()
	ctx := context.Background()
	m, err := s.GetManifest(ctx, "default", "app", digest.FromString("m"))
	if err != nil || m.Size != 9 {
		t.Fatalf("%s: manifest %+v %v", s.Backend(), m, err)
	}
	if tg, err := s.GetTag(ctx, "default", "app", "v1"); err != nil || tg.Digest != m.Digest {
		t.Fatalf("%s: tag %+v %v", s.Backend(), tg, err)
	}
	if ok, err := s.References(ctx, "default", "app", digest.FromString("2")); err != nil || !ok {
		t.Fatalf("%s: manifest refs not copied: %v %v", s.Backend(), ok, err)
	}
	if size, err := s.BlobSize(ctx, "default", "app", digest.FromString("1199")); err != nil || size != 1199 {
		t.Fatalf("%s: blob %d %v", s.Backend(), size, err)
	}
	blobs, _, err := s.ListBlobs(ctx, "", 0)
	if err != nil || len(blobs) != 1201 {
		t.Fatalf("%s: %d blobs, %v", s.Backend(), len(blobs), err)
	}
	r, err := s.GetCacheRule(ctx, "default", "HUB")
	if err != nil || r.Name != "Hub" || !r.CreatedAt.Equal(time.Unix(1700000000, 123000)) {
		t.Fatalf("%s: rule %+v %v", s.Backend(), r, err)
	}
	if g, _ := s.RulesGeneration(ctx, "default"); g != 1 {
		t.Fatalf("%s: rules generation %d", s.Backend(), g)
	}
	if _, err := s.GetSyncRun(ctx, "default", "hub"); err != nil {
		t.Fatalf("%s: sync run %v", s.Backend(), err)
	}
	if tk, err := s.GetToken(ctx, "default", "ci"); err != nil || tk.Name != "CI" {
		t.Fatalf("%s: token %+v %v", s.Backend(), tk, err)
	}
	// The audit log goes on after the copied entries.
	if err := s.AddAudit(ctx, AuditEntry{At: armtime.Of(time.Now()), Who: "admin", Action: "delete", Resource: "/x", Result: "ok"}); err != nil {
		t.Fatalf("%s: audit after copy: %v", s.Backend(), err)
	}
	if log, err := s.ListAudit(ctx, time.Time{}, 10); err != nil || len(log) < 2 || log[0].Action != "delete" {
		t.Fatalf("%s: audit %+v %v", s.Backend(), log, err)
	}
	err = s.UpdateRules(ctx, "default", func(tx RulesTx) error {
		if ok, err := tx.RepositoryExists("app"); err != nil || !ok {
			return fmt.Errorf("pushed flag not copied: %v %v", ok, err)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%s: %v", s.Backend(), err)
	}
}
