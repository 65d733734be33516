package metadata

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/opencontainers/go-digest"
)

// The lifecycle migration: when content was last pulled (pulled_at on
// manifests, tags and blob links; batched writes, see lifecycle.Tracker),
// per-rule retention of cached content, and per-registry quotas (bytes; 0
// = none) for cached and for pushed content.
var (
	sqliteLifecycle = []string{
		`ALTER TABLE manifests ADD COLUMN pulled_at INTEGER NOT NULL DEFAULT 0`,
		`ALTER TABLE tags ADD COLUMN pulled_at INTEGER NOT NULL DEFAULT 0`,
		`ALTER TABLE repo_blobs ADD COLUMN pulled_at INTEGER NOT NULL DEFAULT 0`,
		`ALTER TABLE cache_rules ADD COLUMN retention_days INTEGER NOT NULL DEFAULT 0`,
		`ALTER TABLE registries ADD COLUMN cache_quota INTEGER NOT NULL DEFAULT 0`,
		`ALTER TABLE registries ADD COLUMN storage_quota INTEGER NOT NULL DEFAULT 0`,
	}
	pgLifecycle = []string{
		`ALTER TABLE manifests ADD COLUMN pulled_at BIGINT NOT NULL DEFAULT 0`,
		`ALTER TABLE tags ADD COLUMN pulled_at BIGINT NOT NULL DEFAULT 0`,
		`ALTER TABLE repo_blobs ADD COLUMN pulled_at BIGINT NOT NULL DEFAULT 0`,
		`ALTER TABLE cache_rules ADD COLUMN retention_days INTEGER NOT NULL DEFAULT 0`,
		`ALTER TABLE registries ADD COLUMN cache_quota BIGINT NOT NULL DEFAULT 0`,
		`ALTER TABLE registries ADD COLUMN storage_quota BIGINT NOT NULL DEFAULT 0`,
	}
)

// Kinds of a Pull and of a CachedItem.
const (
	PullManifest = "manifest"
	PullTag      = "tag"
	PullBlob     = "blob"
)

// Pull is one record of access: manifest (Ref a digest), tag (Ref the tag)
// or blob (Ref a digest) of a repository was last pulled At.
type Pull struct {
	Registry, Repo string
	Kind           string
	Ref            string
	At             time.Time
}

// RecordPulls stores a batch of pull times in one transaction. A time only
// ever moves forward (max), so replicas flushing the same rows in any
// order agree; rows that no longer exist are skipped.
func (s *db) RecordPulls(ctx context.Context, pulls []Pull) error {
	if len(pulls) == 0 {
		return nil
	}
	queries := map[string]string{
		PullManifest: `UPDATE manifests SET pulled_at = $1 WHERE registry = $2 AND repo = $3 AND digest = $4 AND pulled_at < $1`,
		PullTag:      `UPDATE tags SET pulled_at = $1 WHERE registry = $2 AND repo = $3 AND tag = $4 AND pulled_at < $1`,
		PullBlob:     `UPDATE repo_blobs SET pulled_at = $1 WHERE registry = $2 AND repo = $3 AND digest = $4 AND pulled_at < $1`,
	}
	// In one order, so that replicas flushing the same rows never wait on
	// each other's row locks in a cycle.
	pulls = slices.Clone(pulls)
	slices.SortFunc(pulls, func(a, b Pull) int {
		return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Registry, b.Registry), cmp.Compare(a.Repo, b.Repo), cmp.Compare(a.Ref, b.Ref))
	})
	return s.tx(ctx, func(tx *sql.Tx) error {
		stmts := map[string]*sql.Stmt{}
		defer func() {
			for _, st := range stmts {
				st.Close()
			}
		}()
		for _, p := range pulls {
			q, ok := queries[p.Kind]
			if !ok {
				return fmt.Errorf("record pulls: unknown kind %q", p.Kind)
			}
			st := stmts[p.Kind]
			if st == nil {
				var err error
				if st, err = tx.PrepareContext(ctx, q); err != nil {
					return fmt.Errorf("record pulls: %w", err)
				}
				stmts[p.Kind] = st
			}
			if _, err := st.ExecContext(ctx, micros(p.At), p.Registry, p.Repo, p.Ref); err != nil {
				return fmt.Errorf("record pulls: %w", err)
			}
		}
		return nil
	})
}

// RepositoryPulledAt returns when a manifest or blob of repo was last
// pulled (zero: never, as far as flushed records go).
func (s *db) RepositoryPulledAt(ctx context.Context, registry, repo string) (time.Time, error) {
	var m, b int64
	err := s.queryRow(ctx, `SELECT COALESCE((SELECT MAX(pulled_at) FROM manifests WHERE registry = $1 AND repo = $2), 0),
		COALESCE((SELECT MAX(pulled_at) FROM repo_blobs WHERE registry = $1 AND repo = $2), 0)`, registry, repo).Scan(&m, &b)
	if err != nil {
		return time.Time{}, fmt.Errorf("repository pulled at: %w", err)
	}
	return fromMicros(max(m, b)), nil
}

// CachedItem is a unit of cached content eviction takes away: a manifest
// (with the tags on it and the blob links only it needed) or a blob link
// no manifest of the repository references. LastUsed is when it was last
// pulled, or stored if it never was.
type CachedItem struct {
	Repo     string
	Kind     string // PullManifest or PullBlob
	Digest   digest.Digest
	Size     int64
	LastUsed time.Time
}

// CachedCursor continues a CachedItems listing after the item it names.
type CachedCursor struct {
	LastUsed time.Time
	Repo     string
	Digest   digest.Digest
}

// Cursor is the position after c.
func (c CachedItem) Cursor() CachedCursor {
	return CachedCursor{LastUsed: c.LastUsed, Repo: c.Repo, Digest: c.Digest}
}

// CachedItems lists up to n items of registry's cached content (its
// repositories without pushed content) last used before `before`, least
// recently used first, after the cursor (zero: from the start).
func (s *db) CachedItems(ctx context.Context, registry string, before time.Time, after CachedCursor, n int) ([]CachedItem, error) {
	q := `SELECT kind, repo, digest, size, used FROM (
		SELECT 'manifest' AS kind, m.repo AS repo, m.digest AS digest, m.size AS size,
			CASE WHEN m.pulled_at > m.created_at THEN m.pulled_at ELSE m.created_at END AS used
		FROM manifests m JOIN repositories r ON r.registry = m.registry AND r.name = m.repo
		WHERE m.registry = $1 AND r.pushed = 0
		UNION ALL
		SELECT 'blob', rb.repo, rb.digest, b.size, CASE WHEN rb.pulled_at > b.created_at THEN rb.pulled_at ELSE b.created_at END
		FROM repo_blobs rb JOIN blobs b ON b.digest = rb.digest JOIN repositories r ON r.registry = rb.registry AND r.name = rb.repo
		WHERE rb.registry = $1 AND r.pushed = 0 AND NOT EXISTS (SELECT 1 FROM manifest_refs mr
			WHERE mr.registry = rb.registry AND mr.repo = rb.repo AND mr.child = rb.digest)
	) AS c WHERE used < $2 AND (used > $3 OR (used = $3 AND (repo > $4 OR (repo = $4 AND digest > $5))))
	ORDER BY used, repo, digest LIMIT $6`
	rows, err := s.r.QueryContext(ctx, q, registry, micros(before), micros(after.LastUsed), after.Repo, after.Digest.String(), n)
	if err != nil {
		return nil, fmt.Errorf("cached items: %w", err)
	}
	defer rows.Close()
	var out []CachedItem
	for rows.Next() {
		var it CachedItem
		var d string
		var used int64
		if err := rows.Scan(&it.Kind, &it.Repo, &d, &it.Size, &used); err != nil {
			return nil, fmt.Errorf("cached items: %w", err)
		}
		it.Digest, it.LastUsed = digest.Digest(d), fromMicros(used)
		out = append(out, it)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("cached items: %w", err)
	}
	return out, nil
}

// ErrPushed: the repository holds pushed content, which is never evicted.
var ErrPushed = errors.New("repository holds pushed content")

// EvictCached removes a cached item from the metadata, in one transaction:
// a manifest with its tags and references and the blob links of repo no
// other manifest of it references, or a blob link no manifest of repo
// references. It returns the bytes repo no longer holds (the blob store
// keeps them until garbage collection). ErrNotFound if the item is gone
// (or, for a blob, referenced again); ErrPushed if repo holds pushed
// content. A dry run computes the same and rolls back.
func (s *db) EvictCached(ctx context.Context, registry string, it CachedItem, dryRun bool) (int64, error) {
	var freed int64
	err := s.tx(ctx, func(tx *sql.Tx) error {
		if err := evictCached(ctx, tx, registry, it, &freed); err != nil {
			return err
		}
		if dryRun {
			return errDryRun
		}
		return nil
	})
	if errors.Is(err, errDryRun) {
		err = nil
	}
	return freed, err
}

// errDryRun rolls a dry run's transaction back.
var errDryRun = errors.New("dry run")

func evictCached(ctx context.Context, tx *sql.Tx, registry string, it CachedItem, freed *int64) error {
	*freed = 0
	var pushed int
	err := tx.QueryRowContext(ctx, `SELECT pushed FROM repositories WHERE registry = $1 AND name = $2`, registry, it.Repo).Scan(&pushed)
	if errors.Is(err, sql.ErrNoRows) {
		return ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("evict: %w", err)
	}
	if pushed != 0 {
		return fmt.Errorf("evict %s: %w", it.Repo, ErrPushed)
	}
	switch it.Kind {
	case PullManifest:
		return evictManifest(ctx, tx, registry, it.Repo, it.Digest, freed)
	case PullBlob:
		return evictBlobLink(ctx, tx, registry, it.Repo, it.Digest, freed)
	}
	return fmt.Errorf("evict: unknown kind %q", it.Kind)
}

func evictManifest(ctx context.Context, tx *sql.Tx, registry, repo string, d digest.Digest, freed *int64) error {
	var size int64
	err := tx.QueryRowContext(ctx, `SELECT size FROM manifests WHERE registry = $1 AND repo = $2 AND digest = $3`, registry, repo, d.String()).Scan(&size)
	if errors.Is(err, sql.ErrNoRows) {
		return ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("evict manifest: %w", err)
	}
	// The blob links only this manifest needed: referenced by it and by
	// no other manifest of repo.
	rows, err := tx.QueryContext(ctx, `SELECT rb.digest, b.size FROM manifest_refs mr
		JOIN repo_blobs rb ON rb.registry = mr.registry AND rb.repo = mr.repo AND rb.digest = mr.child
		JOIN blobs b ON b.digest = rb.digest
		WHERE mr.registry = $1 AND mr.repo = $2 AND mr.manifest = $3 AND NOT EXISTS (SELECT 1 FROM manifest_refs o
			WHERE o.registry = mr.registry AND o.repo = mr.repo AND o.child = mr.child AND o.manifest <> mr.manifest)`,
		registry, repo, d.String())
	if err != nil {
		return fmt.Errorf("evict manifest: %w", err)
	}
	var only []string
	for rows.Next() {
		var bd string
		var bs int64
		if err := rows.Scan(&bd, &bs); err != nil {
			rows.Close()
			return fmt.Errorf("evict manifest: %w", err)
		}
		only = append(only, bd)
		size += bs
	}
	err = rows.Err()
	rows.Close()
	if err != nil {
		return fmt.Errorf("evict manifest: %w", err)
	}
	for _, q := range []string{
		`DELETE FROM tags WHERE registry = $1 AND repo = $2 AND digest = $3`,
		`DELETE FROM manifest_refs WHERE registry = $1 AND repo = $2 AND manifest = $3`,
		`DELETE FROM manifests WHERE registry = $1 AND repo = $2 AND digest = $3`,
	} {
		if _, err := tx.ExecContext(ctx, q, registry, repo, d.String()); err != nil {
			return fmt.Errorf("evict manifest: %w", err)
		}
	}
	for _, bd := range only {
		if _, err := tx.ExecContext(ctx, `DELETE FROM repo_blobs WHERE registry = $1 AND repo = $2 AND digest = $3`, registry, repo, bd); err != nil {
			return fmt.Errorf("evict manifest blobs: %w", err)
		}
	}
	*freed = size
	return nil
}

func evictBlobLink(ctx context.Context, tx *sql.Tx, registry, repo string, d digest.Digest, freed *int64) error {
	var size int64
	err := tx.QueryRowContext(ctx, `SELECT b.size FROM repo_blobs rb JOIN blobs b ON b.digest = rb.digest
		WHERE rb.registry = $1 AND rb.repo = $2 AND rb.digest = $3 AND NOT EXISTS (SELECT 1 FROM manifest_refs mr
			WHERE mr.registry = rb.registry AND mr.repo = rb.repo AND mr.child = rb.digest)`, registry, repo, d.String()).Scan(&size)
	if errors.Is(err, sql.ErrNoRows) {
		return ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("evict blob: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM repo_blobs WHERE registry = $1 AND repo = $2 AND digest = $3`, registry, repo, d.String()); err != nil {
		return fmt.Errorf("evict blob: %w", err)
	}
	*freed = size
	return nil
}
