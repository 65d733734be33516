package metadata

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/arcacache/arca/internal/testutil/pgtest"
)

// A database migrated by a newer arca is refused, naming both versions,
// and left as it was, on both engines.
func TestOpenRefusesNewerSchema(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "arca.db")
	type engine struct {
		name string
		open func(t *testing.T) (Store, error)
		say  string // what the error names
	}
	var url string // the postgres subtest's database, made on first open
	engines := []engine{
		{"sqlite", func(*testing.T) (Store, error) { return OpenSQLite(ctx, path) }, path},
		{"postgres", func(t *testing.T) (Store, error) {
			if url == "" {
				url = pgtest.NewDatabase(t) // skips or fails without PostgreSQL
			}
			return OpenPostgres(ctx, url)
		}, "arca@127.0.0.1"},
	}
	for _, e := range engines {
		t.Run(e.name, func(t *testing.T) {
			s, err := e.open(t)
			if err != nil {
				t.Fatal(err)
			}
			d := s.(*db)
			next := len(d.d.migrations) + 1
			if _, err := d.w.ExecContext(ctx, `INSERT INTO schema_migrations(version) VALUES ($1)`, next); err != nil {
				t.Fatal(err)
			}
			s.Close()
			_, err = e.open(t)
			if !errors.Is(err, ErrSchemaNewer) {
				t.Fatalf("open of a schema at version %d: %v, want ErrSchemaNewer", next, err)
			}
			for _, want := range []string{e.say, fmt.Sprintf("version %d", next), fmt.Sprintf("up to %d", next-1)} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
		})
	}
}

// Migration 7 carries a version-6 database's rows over: names unique
// ignoring case keep working through their keys, sync state follows its
// rule whatever the case it was written with, and millisecond timestamps
// become microseconds.
func TestSQLiteMigration7KeepsData(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "arca.db")
	old, err := OpenSQLite(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	old.Close()
	// Roll the fresh file back to version 6 by building it with the first
	// six migrations only.
	raw, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	mustExec := func(q string, args ...any) {
		t.Helper()
		if _, err := raw.ExecContext(ctx, q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	for _, tbl := range []string{"repositories", "blobs", "repo_blobs", "manifests", "manifest_refs", "tags", "uploads", "registries",
		"cache_rules", "credential_sets", "rules_generation", "operations", "sync_leases", "sync_runs", "sync_tags", "upstream_ratelimits", "schema_migrations",
		"scope_maps", "tokens", "signing_keys", "refresh_tokens", "principals", "audit_log", "rule_stats", "identities", "federated_credentials", "role_assignments", "retention_policies", "fetch_leases", "portal_sessions", "upstream_holds", "login_failures"} {
		mustExec(`DROP TABLE ` + tbl)
	}
	v6 := &db{w: raw, r: raw, d: sqliteDialect}
	v6.d.migrations = sqliteMigrations[:6]
	if err := v6.migrate(ctx); err != nil {
		t.Fatal(err)
	}
	ms := time.Date(2026, 6, 1, 12, 0, 0, 123_000_000, time.UTC)
	us := time.Date(2026, 6, 1, 12, 0, 0, 123_456_000, time.UTC)
	d := digest.FromString("m")
	mustExec(`INSERT INTO manifests(registry, repo, digest, media_type, size, created_at) VALUES ('default', 'app', $1, 'mt', 3, $2)`, d.String(), ms.UnixMilli())
	mustExec(`INSERT INTO tags(registry, repo, tag, digest, updated_at, checked_at) VALUES ('default', 'app', 'v1', $1, $2, $2)`, d.String(), ms.UnixMilli())
	mustExec(`INSERT INTO cache_rules(registry, name, source, target, provisioning_state, created_at, modified_at)
		VALUES ('default', 'MyRule', 'quay.io/a', 'a', 'Succeeded', $1, $1)`, us.UnixMicro())
	mustExec(`INSERT INTO credential_sets(registry, name, login_server, username_ref, password_ref, principal_id, provisioning_state, created_at, modified_at)
		VALUES ('default', 'Hub', 'docker.io', 'u', 'p', 'x', 'Succeeded', $1, $1)`, us.UnixMicro())
	mustExec(`INSERT INTO sync_runs(registry, rule, run_id, result, started_at) VALUES ('default', 'MyRule', 'r1', 'Succeeded', $1)`, ms.UnixMilli())
	mustExec(`INSERT INTO sync_tags(registry, rule, repo, tag, state, error, updated_at) VALUES ('default', 'MyRule', 'app', 'v1', 'failed', 'boom', $1)`, ms.UnixMilli())
	mustExec(`INSERT INTO tokens(registry, name, scope_map, status, created_at, modified_at) VALUES ('default', 'CI-Token', 'Pull', 'enabled', $1, $1)`, ms.UnixMilli())
	mustExec(`INSERT INTO scope_maps(registry, name, actions, created_at, modified_at) VALUES ('default', 'Pull', '["repositories/*/content/read"]', $1, $1)`, ms.UnixMilli())
	mustExec(`INSERT INTO audit_log(at, who, action, resource, result) VALUES ($1, 'admin', 'create', '/x', 'ok')`, ms.UnixMilli())
	raw.Close()

	s, err := OpenSQLite(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if v, _ := s.SchemaVersion(ctx); v != len(sqliteMigrations) {
		t.Fatalf("schema version %d, want %d", v, len(sqliteMigrations))
	}
	m, err := s.GetManifest(ctx, "default", "app", d)
	if err != nil || !m.CreatedAt.Equal(ms) {
		t.Fatalf("manifest created %v (%v), want %v", m.CreatedAt, err, ms)
	}
	if tg, err := s.GetTag(ctx, "default", "app", "v1"); err != nil || !tg.UpdatedAt.Equal(ms) || !tg.CheckedAt.Equal(ms) {
		t.Fatalf("tag %+v %v", tg, err)
	}
	if r, err := s.GetCacheRule(ctx, "default", "myrule"); err != nil || r.Name != "MyRule" || !r.CreatedAt.Equal(us) {
		t.Fatalf("rule %+v %v", r, err)
	}
	if c, err := s.GetCredentialSet(ctx, "default", "HUB"); err != nil || c.Name != "Hub" {
		t.Fatalf("credential set %+v %v", c, err)
	}
	if run, err := s.GetSyncRun(ctx, "default", "myRule"); err != nil || !run.StartedAt.Equal(ms) {
		t.Fatalf("sync run %+v %v", run, err)
	}
	if n, err := s.CountSyncTagErrors(ctx, "default", "MYRULE"); err != nil || n != 1 {
		t.Fatalf("sync tag errors %d %v", n, err)
	}
	if tk, err := s.GetToken(ctx, "default", "ci-token"); err != nil || tk.Name != "CI-Token" || !tk.Created.Equal(ms) {
		t.Fatalf("token %+v %v", tk, err)
	}
	// A scope map in use (by a name in another case) is not deleted.
	if err := s.DeleteScopeMap(ctx, "default", "pull"); !errors.Is(err, ErrConflict) {
		t.Fatalf("delete of a used scope map: %v, want ErrConflict", err)
	}
	if log, err := s.ListAudit(ctx, ms.Add(-time.Second), 10); err != nil || len(log) != 1 || !log[0].At.Equal(ms) {
		t.Fatalf("audit %+v %v", log, err)
	}
}

// migrationsBefore returns ms up to (not including) migration first.
func migrationsBefore(t *testing.T, ms [][]string, first []string) [][]string {
	t.Helper()
	for i := range ms {
		if len(ms[i]) > 0 && &ms[i][0] == &first[0] {
			return ms[:i]
		}
	}
	t.Fatal("not a migration")
	return nil
}

// migrationEngine opens a raw database of an engine (to migrate part way
// and write rows as an older arca did) and then the store on it.
type migrationEngine struct {
	name string
	open func(t *testing.T) (*sql.DB, dialect, func() (Store, error))
}

func migrationEngines(ctx context.Context) []migrationEngine {
	return []migrationEngine{
		{"sqlite", func(t *testing.T) (*sql.DB, dialect, func() (Store, error)) {
			path := filepath.Join(t.TempDir(), "arca.db")
			raw, err := sql.Open("sqlite", "file:"+path)
			if err != nil {
				t.Fatal(err)
			}
			return raw, sqliteDialect, func() (Store, error) { return OpenSQLite(ctx, path) }
		}},
		{"postgres", func(t *testing.T) (*sql.DB, dialect, func() (Store, error)) {
			url := pgtest.NewDatabase(t)
			raw, err := sql.Open("pgx", url)
			if err != nil {
				t.Fatal(err)
			}
			return raw, pgDialect, func() (Store, error) { return OpenPostgres(ctx, url) }
		}},
	}
}

// The manifest attributes migration leaves existing manifests undescribed
// (the registry describes them from their blobs when they are first
// listed) and marks what their artifact type tells is a signature, so
// that a manifest signed before the upgrade shows as signed at once; on
// both engines.
func TestManifestAttrsMigration(t *testing.T) {
	ctx := context.Background()
	for _, e := range migrationEngines(ctx) {
		t.Run(e.name, func(t *testing.T) {
			raw, d, open := e.open(t)
			defer raw.Close()
			old := &db{w: raw, r: raw, d: d}
			old.d.migrations = migrationsBefore(t, d.migrations, schemaManifestAttrs)
			if err := old.migrate(ctx); err != nil {
				t.Fatal(err)
			}
			img, sig := digest.FromString("img"), digest.FromString("sig")
			for _, q := range []struct {
				d              digest.Digest
				artifact, subj string
			}{{img, "application/vnd.oci.image.config.v1+json", ""}, {sig, "application/vnd.cncf.notary.signature", img.String()}} {
				if _, err := raw.ExecContext(ctx, `INSERT INTO manifests(registry, repo, digest, media_type, size, artifact_type, subject, created_at)
					VALUES ('default', 'app', $1, 'mt', 3, $2, $3, 1)`, q.d.String(), q.artifact, q.subj); err != nil {
					t.Fatal(err)
				}
			}
			raw.Close()
			s, err := open()
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			m, err := s.ManifestInfo(ctx, "default", "app", img)
			if err != nil || m.Attrs.Described || !m.Signed {
				t.Fatalf("image after the migration: %+v %v (want undescribed, signed)", m, err)
			}
			if m, err := s.ManifestInfo(ctx, "default", "app", sig); err != nil || !m.Attrs.Signature || m.Attrs.Described {
				t.Fatalf("signature after the migration: %+v %v", m, err)
			}
		})
	}
}

// The variant migration marks every manifest described with a platform (an
// image or an index) undescribed, keeping what it recorded, so that it is
// described again (with its variant and os.version) when first listed;
// a manifest without a platform (a signature) stays described. On both
// engines.
func TestManifestVariantMigration(t *testing.T) {
	ctx := context.Background()
	for _, e := range migrationEngines(ctx) {
		t.Run(e.name, func(t *testing.T) {
			raw, d, open := e.open(t)
			defer raw.Close()
			old := &db{w: raw, r: raw, d: d}
			old.d.migrations = migrationsBefore(t, d.migrations, schemaManifestVariant)
			if err := old.migrate(ctx); err != nil {
				t.Fatal(err)
			}
			img, idx, sig := digest.FromString("img"), digest.FromString("idx"), digest.FromString("sig")
			refs := `[{"digest":"` + img.String() + `","architecture":"arm","os":"linux"}]`
			for _, q := range []struct {
				d                digest.Digest
				arch, os, refs   string
				signature, descr int
			}{{img, "arm", "linux", "", 0, 1}, {idx, "", "", refs, 0, 1}, {sig, "", "", "", 1, 1}} {
				if _, err := raw.ExecContext(ctx, `INSERT INTO manifests(registry, repo, digest, media_type, size, created_at,
					config_media_type, architecture, os, image_size, platform_refs, signature, described)
					VALUES ('default', 'app', $1, 'mt', 3, 1, 'cfg', $2, $3, 42, $4, $5, $6)`, q.d.String(), q.arch, q.os, q.refs, q.signature, q.descr); err != nil {
					t.Fatal(err)
				}
			}
			raw.Close()
			s, err := open()
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			get := func(d digest.Digest) ManifestAttrs {
				t.Helper()
				m, err := s.ManifestInfo(ctx, "default", "app", d)
				if err != nil {
					t.Fatal(err)
				}
				return m.Attrs
			}
			if a := get(img); a.Described || a.Architecture != "arm" || a.OS != "linux" || a.ImageSize != 42 || a.Variant != "" {
				t.Errorf("image after the migration: %+v (want undescribed, its platform kept)", a)
			}
			if a := get(idx); a.Described || len(a.References) != 1 || a.References[0].Architecture != "arm" {
				t.Errorf("index after the migration: %+v (want undescribed, its references kept)", a)
			}
			if a := get(sig); !a.Described || !a.Signature {
				t.Errorf("signature after the migration: %+v (want still described)", a)
			}
		})
	}
}
