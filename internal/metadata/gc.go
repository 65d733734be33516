package metadata

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
)

// Garbage collection state (see docs/architecture.md, "Garbage
// collection"). A blobs row is live while a repository links it, a
// manifest is stored under its digest or a manifest references it (any
// registry). GC marks an unreferenced row (marked_at), and only a row
// still unreferenced and still marked a grace period later is claimed
// (deleting_at), its bytes deleted, then the row. Every transaction that
// creates a reference writes the referenced blob's row too (clearing the
// mark, refusing a claimed row), so it and GC's conditional updates of
// that row are ordered on both engines.
var (
	sqliteGC = []string{
		`ALTER TABLE blobs ADD COLUMN marked_at INTEGER NOT NULL DEFAULT 0`,
		`ALTER TABLE blobs ADD COLUMN deleting_at INTEGER NOT NULL DEFAULT 0`,
		`CREATE INDEX manifests_digest ON manifests(digest)`,
		`CREATE TABLE retention_policies (
	registry   TEXT PRIMARY KEY,
	status     TEXT NOT NULL,
	days       INTEGER NOT NULL,
	updated_at INTEGER NOT NULL
)`,
	}
	pgGC = []string{
		`ALTER TABLE blobs ADD COLUMN marked_at BIGINT NOT NULL DEFAULT 0`,
		`ALTER TABLE blobs ADD COLUMN deleting_at BIGINT NOT NULL DEFAULT 0`,
		`CREATE INDEX manifests_digest ON manifests(digest)`,
		`CREATE TABLE retention_policies (
	registry   TEXT COLLATE "C" PRIMARY KEY,
	status     TEXT NOT NULL,
	days       INTEGER NOT NULL,
	updated_at BIGINT NOT NULL
)`,
	}
)

// ClaimTTL is how long a GC claim on a blob holds off writers of the
// same digest: GC gives up deleting a claimed blob's bytes after half of
// it, and a writer (PrepareBlob) takes a claim older than it over.
const ClaimTTL = time.Minute

// unreferenced is true of the blobs row being looked at when nothing
// references it.
const unreferenced = `NOT EXISTS (SELECT 1 FROM repo_blobs rb WHERE rb.digest = blobs.digest)
	AND NOT EXISTS (SELECT 1 FROM manifests mf WHERE mf.digest = blobs.digest)
	AND NOT EXISTS (SELECT 1 FROM manifest_refs mr WHERE mr.child = blobs.digest)`

// errBlobDeleting: a reference to a blob that GC has claimed is refused.
var errBlobDeleting = fmt.Errorf("%w: blob is being deleted by garbage collection", ErrNotFound)

// upsertBlob records blob d (a reference to it is being created in tx):
// the row is created, or its GC mark cleared. It refuses a row GC claimed.
func upsertBlob(ctx context.Context, tx *sql.Tx, d digest.Digest, size int64) error {
	res, err := tx.ExecContext(ctx, `INSERT INTO blobs(digest, size, created_at) VALUES ($1, $2, $3)
		ON CONFLICT(digest) DO UPDATE SET marked_at = 0 WHERE blobs.deleting_at = 0`, d.String(), size, now())
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		if err == nil {
			err = fmt.Errorf("%s: %w", d, errBlobDeleting)
		}
		return err
	}
	return nil
}

// refBlobs clears the GC marks of the blobs a new manifest references (in
// digest order, so concurrent manifests sharing layers lock alike). Rows
// GC already claimed are left: those blobs are as good as absent.
func refBlobs(ctx context.Context, tx *sql.Tx, refs []Ref) error {
	var ds []string
	for _, r := range refs {
		ds = append(ds, r.Digest.String())
	}
	slices.Sort(ds)
	ds = slices.Compact(ds)
	for len(ds) > 0 {
		chunk := ds[:min(len(ds), 500)]
		ds = ds[len(chunk):]
		if _, err := tx.ExecContext(ctx, `UPDATE blobs SET marked_at = 0 WHERE deleting_at = 0 AND digest IN (`+placeholders(1, len(chunk))+`)`, anys(chunk)...); err != nil {
			return err
		}
	}
	return nil
}

func anys[T any](v []T) []any {
	out := make([]any, len(v))
	for i := range v {
		out[i] = v[i]
	}
	return out
}

func digestArgs(ds []digest.Digest) []any {
	out := make([]any, len(ds))
	for i, d := range ds {
		out[i] = d.String()
	}
	return out
}

// PrepareBlob is called before blob d's bytes are committed to the blob
// store: it records the row (unmarked), so that GC cannot delete the
// bytes about to be committed for at least a grace period. While GC is
// deleting d it waits (polling) until GC is done, or takes over a claim
// older than ClaimTTL (its GC died).
func (s *db) PrepareBlob(ctx context.Context, d digest.Digest, size int64) error {
	// A row neither marked nor claimed needs no write: a mark made after
	// this read still leaves the writer a whole grace period.
	var marked, deleting int64
	err := s.queryRow(ctx, `SELECT marked_at, deleting_at FROM blobs WHERE digest = $1`, d.String()).Scan(&marked, &deleting)
	if err == nil && marked == 0 && deleting == 0 {
		return nil
	}
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("prepare blob: %w", err)
	}
	for {
		err := s.tx(ctx, func(tx *sql.Tx) error { return upsertBlob(ctx, tx, d, size) })
		if !errors.Is(err, errBlobDeleting) {
			if err != nil {
				return fmt.Errorf("prepare blob: %w", err)
			}
			return nil
		}
		var took bool
		err = s.tx(ctx, func(tx *sql.Tx) error {
			res, err := tx.ExecContext(ctx, `UPDATE blobs SET deleting_at = 0, marked_at = 0 WHERE digest = $1 AND deleting_at <> 0 AND deleting_at < $2`,
				d.String(), now()-ClaimTTL.Microseconds())
			if err != nil {
				return err
			}
			n, err := res.RowsAffected()
			took = n > 0
			return err
		})
		if err != nil {
			return fmt.Errorf("prepare blob: %w", err)
		}
		if took {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("prepare blob %s: %w", d, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// GCBlob is a blobs row as garbage collection sees it.
type GCBlob struct {
	Digest     digest.Digest
	Size       int64
	Referenced bool
	MarkedAt   time.Time // zero: not marked
	DeletingAt time.Time // zero: not claimed
}

// GCBlobs returns up to n blobs rows after `after`, in digest order, with
// whether anything references them, and whether more follow.
func (s *db) GCBlobs(ctx context.Context, after digest.Digest, n int) ([]GCBlob, bool, error) {
	q, args := limit(`SELECT digest, size, marked_at, deleting_at, CASE WHEN `+unreferenced+` THEN 0 ELSE 1 END
		FROM blobs WHERE digest > $1 ORDER BY digest`, 2, n, []any{after.String()})
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, false, fmt.Errorf("gc blobs: %w", err)
	}
	defer rows.Close()
	var out []GCBlob
	for rows.Next() {
		var b GCBlob
		var d string
		var marked, deleting int64
		var ref int
		if err := rows.Scan(&d, &b.Size, &marked, &deleting, &ref); err != nil {
			return nil, false, fmt.Errorf("gc blobs: %w", err)
		}
		b.Digest, b.Referenced = digest.Digest(d), ref == 1
		b.MarkedAt, b.DeletingAt = fromMicros(marked), fromMicros(deleting)
		out = append(out, b)
	}
	if err := rows.Err(); err != nil {
		return nil, false, fmt.Errorf("gc blobs: %w", err)
	}
	if n > 0 && len(out) > n {
		return out[:n], true, nil
	}
	return out, false, nil
}

// gcTx runs fn in a write transaction that sees one snapshot (PostgreSQL:
// REPEATABLE READ), so a concurrent writer of a row fn updates aborts fn
// (retried) rather than fn judging the row by a reference it cannot see.
func (s *db) gcTx(ctx context.Context, fn func(*sql.Tx) error) error {
	for attempt := 1; ; attempt++ {
		tx, err := s.w.BeginTx(ctx, s.d.snapshot)
		if err != nil {
			return fmt.Errorf("metadata begin: %w", err)
		}
		if err = fn(tx); err == nil {
			err = tx.Commit()
		} else {
			_ = tx.Rollback()
		}
		if err == nil || attempt == 5 || !s.d.retryable(err) || ctx.Err() != nil {
			return err
		}
	}
}

// MarkBlobs marks those of ds that nothing references (and that are not
// marked or claimed yet) as seen unreferenced at `at`, clears the marks of
// those referenced again, and returns how many it marked.
func (s *db) MarkBlobs(ctx context.Context, ds []digest.Digest, at time.Time) (int, error) {
	if len(ds) == 0 {
		return 0, nil
	}
	var marked int64
	err := s.gcTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `UPDATE blobs SET marked_at = 0 WHERE marked_at <> 0 AND digest IN (`+placeholders(1, len(ds))+`) AND NOT (`+unreferenced+`)`,
			digestArgs(ds)...); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `UPDATE blobs SET marked_at = $1 WHERE marked_at = 0 AND deleting_at = 0 AND digest IN (`+placeholders(2, len(ds))+`) AND `+unreferenced,
			append([]any{micros(at)}, digestArgs(ds)...)...)
		if err != nil {
			return err
		}
		marked, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("mark blobs: %w", err)
	}
	return int(marked), nil
}

// ClaimBlobs claims for deletion, at `at`, those of ds still unreferenced
// and marked before markedBefore, and those already claimed (by a GC that
// did not finish: only one GC runs at a time), returning them.
func (s *db) ClaimBlobs(ctx context.Context, ds []digest.Digest, markedBefore, at time.Time) ([]BlobRef, error) {
	if len(ds) == 0 {
		return nil, nil
	}
	var out []BlobRef
	err := s.gcTx(ctx, func(tx *sql.Tx) error {
		out = out[:0]
		rows, err := tx.QueryContext(ctx, `UPDATE blobs SET deleting_at = $1 WHERE digest IN (`+placeholders(3, len(ds))+`)
			AND (deleting_at <> 0 OR (marked_at <> 0 AND marked_at < $2 AND `+unreferenced+`)) RETURNING digest, size`,
			append([]any{micros(at), micros(markedBefore)}, digestArgs(ds)...)...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var b BlobRef
			var d string
			if err := rows.Scan(&d, &b.Size); err != nil {
				return err
			}
			b.Digest = digest.Digest(d)
			out = append(out, b)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("claim blobs: %w", err)
	}
	slices.SortFunc(out, func(a, b BlobRef) int { return strings.Compare(a.Digest.String(), b.Digest.String()) })
	return out, nil
}

// ClaimOrphans claims for deletion, at `at`, the blobs of refs that have
// no row at all (bytes in the blob store that metadata never recorded),
// by inserting their rows claimed; it returns those it claimed.
func (s *db) ClaimOrphans(ctx context.Context, refs []BlobRef, at time.Time) ([]BlobRef, error) {
	var out []BlobRef
	err := s.tx(ctx, func(tx *sql.Tx) error {
		out = out[:0]
		for _, b := range refs {
			res, err := tx.ExecContext(ctx, `INSERT INTO blobs(digest, size, created_at, deleting_at) VALUES ($1, $2, $3, $3) ON CONFLICT DO NOTHING`,
				b.Digest.String(), b.Size, micros(at))
			if err != nil {
				return err
			}
			if n, _ := res.RowsAffected(); n > 0 {
				out = append(out, b)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("claim orphan blobs: %w", err)
	}
	return out, nil
}

// KnownBlobs returns those of ds that have a blobs row.
func (s *db) KnownBlobs(ctx context.Context, ds []digest.Digest) ([]digest.Digest, error) {
	if len(ds) == 0 {
		return nil, nil
	}
	rows, err := s.r.QueryContext(ctx, `SELECT digest FROM blobs WHERE digest IN (`+placeholders(1, len(ds))+`)`, digestArgs(ds)...)
	if err != nil {
		return nil, fmt.Errorf("known blobs: %w", err)
	}
	defer rows.Close()
	var out []digest.Digest
	for rows.Next() {
		var d string
		if err := rows.Scan(&d); err != nil {
			return nil, fmt.Errorf("known blobs: %w", err)
		}
		out = append(out, digest.Digest(d))
	}
	return out, rows.Err()
}

// ForgetBlobs deletes the rows of ds still claimed at claimedAt (their
// bytes are gone) and returns how many it deleted.
func (s *db) ForgetBlobs(ctx context.Context, ds []digest.Digest, claimedAt time.Time) (int, error) {
	if len(ds) == 0 {
		return 0, nil
	}
	var n int64
	err := s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM blobs WHERE deleting_at = $1 AND digest IN (`+placeholders(2, len(ds))+`)`,
			append([]any{micros(claimedAt)}, digestArgs(ds)...)...)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("forget blobs: %w", err)
	}
	return int(n), nil
}

// ManifestKey names one manifest of a registry.
type ManifestKey struct {
	Repo   string
	Digest digest.Digest
	Size   int64
}

// untagged is true of the manifests row being looked at when no tag of
// its repository points at it, no manifest of its repository (an index)
// references it, and it is not a referrer of a manifest its repository
// holds. A referrer lives as long as its subject; an index's children as
// long as the index.
const untagged = `NOT EXISTS (SELECT 1 FROM tags t WHERE t.registry = manifests.registry AND t.repo = manifests.repo AND t.digest = manifests.digest)
	AND NOT EXISTS (SELECT 1 FROM manifest_refs mr WHERE mr.child = manifests.digest AND mr.registry = manifests.registry AND mr.repo = manifests.repo)
	AND (manifests.subject = '' OR NOT EXISTS (SELECT 1 FROM manifests sj WHERE sj.registry = manifests.registry AND sj.repo = manifests.repo AND sj.digest = manifests.subject))`

// UntaggedManifests returns up to n manifests of registry created before
// `before` that nothing keeps (see untagged), after (repo, digest) of
// `after`, in that order, and whether more follow.
func (s *db) UntaggedManifests(ctx context.Context, registry string, before time.Time, after ManifestKey, n int) ([]ManifestKey, bool, error) {
	q, args := limit(`SELECT repo, digest, size FROM manifests WHERE registry = $1 AND created_at < $2
		AND (repo > $3 OR (repo = $3 AND digest > $4)) AND `+untagged+` ORDER BY repo, digest`, 5, n,
		[]any{strings.ToLower(registry), micros(before), after.Repo, after.Digest.String()})
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, false, fmt.Errorf("untagged manifests: %w", err)
	}
	defer rows.Close()
	var out []ManifestKey
	for rows.Next() {
		var k ManifestKey
		var d string
		if err := rows.Scan(&k.Repo, &d, &k.Size); err != nil {
			return nil, false, fmt.Errorf("untagged manifests: %w", err)
		}
		k.Digest = digest.Digest(d)
		out = append(out, k)
	}
	if err := rows.Err(); err != nil {
		return nil, false, fmt.Errorf("untagged manifests: %w", err)
	}
	if n > 0 && len(out) > n {
		return out[:n], true, nil
	}
	return out, false, nil
}

// DeleteUntaggedManifest deletes manifest d of repo if it is still
// untagged, unreferenced and created before `before` (under the lock
// PutManifest takes for the repository, so a tag or an index pushed
// meanwhile keeps it), and reports whether it did.
func (s *db) DeleteUntaggedManifest(ctx context.Context, registry, repo string, d digest.Digest, before time.Time) (bool, error) {
	var deleted bool
	err := s.tx(ctx, func(tx *sql.Tx) error {
		if err := s.d.lock(ctx, tx, manifestsLock(registry, repo)); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM manifests WHERE registry = $1 AND repo = $2 AND digest = $3 AND created_at < $4 AND `+untagged,
			registry, repo, d.String(), micros(before))
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil || n == 0 {
			return err
		}
		deleted = true
		_, err = tx.ExecContext(ctx, `DELETE FROM manifest_refs WHERE registry = $1 AND repo = $2 AND manifest = $3`, registry, repo, d.String())
		return err
	})
	if err != nil {
		return false, fmt.Errorf("delete untagged manifest: %w", err)
	}
	return deleted, nil
}

func manifestsLock(registry, repo string) string { return "manifests:" + registry + "/" + repo }

// RetentionPolicy is a registry's retention policy for untagged
// manifests (ACR's policies.retentionPolicy).
type RetentionPolicy struct {
	Registry  string
	Enabled   bool
	Days      int
	UpdatedAt time.Time
}

// DefaultRetentionDays is ACR's default for a policy never set.
const DefaultRetentionDays = 7

// GetRetentionPolicy returns registry's policy (disabled, 7 days, when
// never set).
func (s *db) GetRetentionPolicy(ctx context.Context, registry string) (RetentionPolicy, error) {
	p := RetentionPolicy{Registry: strings.ToLower(registry), Days: DefaultRetentionDays}
	var status string
	var updated int64
	err := s.queryRow(ctx, `SELECT status, days, updated_at FROM retention_policies WHERE registry = $1`, p.Registry).Scan(&status, &p.Days, &updated)
	if errors.Is(err, sql.ErrNoRows) {
		return p, nil
	}
	if err != nil {
		return p, fmt.Errorf("retention policy: %w", err)
	}
	p.Enabled, p.UpdatedAt = status == "enabled", fromMicros(updated)
	return p, nil
}

// PutRetentionPolicy sets p.Registry's policy.
func (s *db) PutRetentionPolicy(ctx context.Context, p RetentionPolicy) error {
	status := "disabled"
	if p.Enabled {
		status = "enabled"
	}
	return s.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO retention_policies(registry, status, days, updated_at) VALUES ($1, $2, $3, $4)
			ON CONFLICT(registry) DO UPDATE SET status = excluded.status, days = excluded.days, updated_at = excluded.updated_at`,
			strings.ToLower(p.Registry), status, p.Days, now())
		if err != nil {
			return fmt.Errorf("put retention policy: %w", err)
		}
		return nil
	})
}

// EnabledRetentionPolicies lists the registries whose policy is enabled.
func (s *db) EnabledRetentionPolicies(ctx context.Context) ([]RetentionPolicy, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT registry, days, updated_at FROM retention_policies WHERE status = 'enabled' ORDER BY registry`)
	if err != nil {
		return nil, fmt.Errorf("retention policies: %w", err)
	}
	defer rows.Close()
	var out []RetentionPolicy
	for rows.Next() {
		p := RetentionPolicy{Enabled: true}
		var updated int64
		if err := rows.Scan(&p.Registry, &p.Days, &updated); err != nil {
			return nil, fmt.Errorf("retention policies: %w", err)
		}
		p.UpdatedAt = fromMicros(updated)
		out = append(out, p)
	}
	return out, rows.Err()
}
