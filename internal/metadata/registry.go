package metadata

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/opencontainers/go-digest"
)

var schemaRegistry = []string{
	`CREATE TABLE repositories (
	registry   TEXT NOT NULL,
	name       TEXT NOT NULL,
	created_at INTEGER NOT NULL,
	PRIMARY KEY (registry, name)
)`,
	`CREATE TABLE blobs (
	digest     TEXT PRIMARY KEY,
	size       INTEGER NOT NULL,
	created_at INTEGER NOT NULL
)`,
	`CREATE TABLE repo_blobs (
	registry TEXT NOT NULL,
	repo     TEXT NOT NULL,
	digest   TEXT NOT NULL REFERENCES blobs(digest),
	PRIMARY KEY (registry, repo, digest)
)`,
	`CREATE INDEX repo_blobs_digest ON repo_blobs(digest)`,
	`CREATE TABLE manifests (
	registry      TEXT NOT NULL,
	repo          TEXT NOT NULL,
	digest        TEXT NOT NULL,
	media_type    TEXT NOT NULL,
	size          INTEGER NOT NULL,
	artifact_type TEXT NOT NULL DEFAULT '',
	subject       TEXT NOT NULL DEFAULT '',
	annotations   TEXT NOT NULL DEFAULT '',
	created_at    INTEGER NOT NULL,
	PRIMARY KEY (registry, repo, digest)
)`,
	`CREATE INDEX manifests_subject ON manifests(registry, repo, subject) WHERE subject <> ''`,
	`CREATE TABLE manifest_refs (
	registry TEXT NOT NULL,
	repo     TEXT NOT NULL,
	manifest TEXT NOT NULL,
	child    TEXT NOT NULL,
	kind     TEXT NOT NULL,
	PRIMARY KEY (registry, repo, manifest, child)
)`,
	`CREATE INDEX manifest_refs_child ON manifest_refs(child)`,
	`CREATE TABLE tags (
	registry   TEXT NOT NULL,
	repo       TEXT NOT NULL,
	tag        TEXT NOT NULL,
	digest     TEXT NOT NULL,
	updated_at INTEGER NOT NULL,
	checked_at INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (registry, repo, tag)
)`,
	`CREATE INDEX tags_digest ON tags(registry, repo, digest)`,
	`CREATE TABLE uploads (
	id         TEXT PRIMARY KEY,
	registry   TEXT NOT NULL,
	repo       TEXT NOT NULL,
	created_at INTEGER NOT NULL
)`,
}

// Ref kinds recorded for a manifest's references.
const (
	RefBlob     = "blob"
	RefManifest = "manifest"
)

// Ref is one reference from a manifest to a blob or another manifest.
type Ref struct {
	Digest digest.Digest
	Kind   string
}

// Manifest is a manifest's record (its bytes live in the blob store).
type Manifest struct {
	Registry     string
	Repo         string
	Digest       digest.Digest
	MediaType    string
	Size         int64
	ArtifactType string
	Subject      digest.Digest
	Annotations  map[string]string
	Refs         []Ref
	CreatedAt    time.Time
	// Attrs are what repository listings show of it, worked out when it
	// is stored (content.Describe).
	Attrs ManifestAttrs
}

// Referrer is one entry of a referrers listing.
type Referrer struct {
	Digest       digest.Digest
	MediaType    string
	Size         int64
	ArtifactType string
	Annotations  map[string]string
}

func ensureRepo(ctx context.Context, tx *sql.Tx, registry, repo string) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO repositories(registry, name, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`, registry, repo, now())
	return err
}

// LinkBlob records that blob d (size bytes, already committed to the blob
// store) belongs to repository repo.
func (s *db) LinkBlob(ctx context.Context, registry, repo string, d digest.Digest, size int64) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		if err := ensureRepo(ctx, tx, registry, repo); err != nil {
			return err
		}
		if err := upsertBlob(ctx, tx, d, size); err != nil {
			return fmt.Errorf("link blob: %w", err)
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO repo_blobs(registry, repo, digest) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`, registry, repo, d.String())
		if err != nil {
			return fmt.Errorf("link blob: %w", err)
		}
		return nil
	})
}

// BlobSize returns the size of blob d if it is linked to repo.
func (s *db) BlobSize(ctx context.Context, registry, repo string, d digest.Digest) (int64, error) {
	var size int64
	err := s.queryRow(ctx, `SELECT b.size FROM repo_blobs rb JOIN blobs b ON b.digest = rb.digest WHERE rb.registry = $1 AND rb.repo = $2 AND rb.digest = $3`, registry, repo, d.String()).Scan(&size)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, ErrNotFound
	}
	if err != nil {
		return 0, fmt.Errorf("blob size: %w", err)
	}
	return size, nil
}

// References reports whether a manifest of repo references d (a blob, or
// a manifest of an index).
func (s *db) References(ctx context.Context, registry, repo string, d digest.Digest) (bool, error) {
	var one int
	err := s.queryRow(ctx, `SELECT 1 FROM manifest_refs WHERE child = $1 AND registry = $2 AND repo = $3 LIMIT 1`, d.String(), registry, repo).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("references: %w", err)
	}
	return true, nil
}

// UnlinkBlob removes blob d from repo. The bytes stay until garbage
// collection finds nothing else references them.
func (s *db) UnlinkBlob(ctx context.Context, registry, repo string, d digest.Digest) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM repo_blobs WHERE registry = $1 AND repo = $2 AND digest = $3`, registry, repo, d.String())
		if err != nil {
			return fmt.Errorf("unlink blob: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		return nil
	})
}

// MissingRefs returns the references of m that repo does not hold, in
// one query per kind of reference (blobs, manifests), whatever their
// number.
func (s *db) MissingRefs(ctx context.Context, registry, repo string, refs []Ref) ([]Ref, error) {
	byKind := map[bool][]any{} // manifest? -> digests
	for _, ref := range refs {
		isManifest := ref.Kind == RefManifest
		byKind[isManifest] = append(byKind[isManifest], ref.Digest.String())
	}
	held := map[string]bool{}
	for isManifest, digests := range byKind {
		table := "repo_blobs"
		if isManifest {
			table = "manifests"
		}
		// Chunks stay far below either engine's parameter limit.
		for len(digests) > 0 {
			chunk := digests[:min(len(digests), 500)]
			digests = digests[len(chunk):]
			q := `SELECT digest FROM ` + table + ` WHERE registry = $1 AND repo = $2 AND digest IN (` + placeholders(3, len(chunk)) + `)`
			rows, err := s.r.QueryContext(ctx, q, append([]any{registry, repo}, chunk...)...)
			if err != nil {
				return nil, fmt.Errorf("check refs: %w", err)
			}
			for rows.Next() {
				var d string
				if err := rows.Scan(&d); err != nil {
					rows.Close()
					return nil, fmt.Errorf("check refs: %w", err)
				}
				held[table+" "+d] = true
			}
			err = rows.Err()
			rows.Close()
			if err != nil {
				return nil, fmt.Errorf("check refs: %w", err)
			}
		}
	}
	var missing []Ref
	for _, ref := range refs {
		table := "repo_blobs"
		if ref.Kind == RefManifest {
			table = "manifests"
		}
		if !held[table+" "+ref.Digest.String()] {
			missing = append(missing, ref)
		}
	}
	return missing, nil
}

// PutManifest records m (whose bytes are committed in the blob store) and
// points tags at it, in one transaction.
func (s *db) PutManifest(ctx context.Context, m Manifest, tags ...string) error {
	var ann string
	if m.Subject != "" && len(m.Annotations) > 0 {
		b, _ := json.Marshal(m.Annotations)
		ann = string(b)
	}
	return s.tx(ctx, func(tx *sql.Tx) error {
		if err := ensureRepo(ctx, tx, m.Registry, m.Repo); err != nil {
			return fmt.Errorf("put manifest: %w", err)
		}
		// Serialised with garbage collection of untagged manifests.
		if err := s.d.lock(ctx, tx, manifestsLock(m.Registry, m.Repo)); err != nil {
			return fmt.Errorf("put manifest: %w", err)
		}
		t := now()
		if err := upsertBlob(ctx, tx, m.Digest, m.Size); err != nil {
			return fmt.Errorf("put manifest: %w", err)
		}
		if err := refBlobs(ctx, tx, m.Refs); err != nil {
			return fmt.Errorf("put manifest refs: %w", err)
		}
		a := m.Attrs
		res, err := tx.ExecContext(ctx, `INSERT INTO manifests(registry, repo, digest, media_type, size, artifact_type, subject, annotations, created_at,
			config_media_type, architecture, os, variant, os_version, image_size, platform_refs, signature, described)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18) ON CONFLICT DO NOTHING`,
			m.Registry, m.Repo, m.Digest.String(), m.MediaType, m.Size, m.ArtifactType, m.Subject.String(), ann, t,
			a.ConfigMediaType, a.Architecture, a.OS, a.Variant, a.OSVersion, a.ImageSize, a.refsJSON(), b2i(a.Signature), b2i(a.Described))
		if err != nil {
			return fmt.Errorf("put manifest: %w", err)
		}
		if n, _ := res.RowsAffected(); n > 0 {
			for _, ref := range m.Refs {
				if _, err := tx.ExecContext(ctx, `INSERT INTO manifest_refs(registry, repo, manifest, child, kind) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING`,
					m.Registry, m.Repo, m.Digest.String(), ref.Digest.String(), ref.Kind); err != nil {
					return fmt.Errorf("put manifest refs: %w", err)
				}
			}
		}
		// In one order, so that two pushes setting the same tags never
		// wait on each other's rows in a cycle.
		for _, tag := range slices.Sorted(slices.Values(tags)) {
			if err := setTag(ctx, tx, m.Registry, m.Repo, tag, m.Digest, t); err != nil {
				return err
			}
		}
		return nil
	})
}

func setTag(ctx context.Context, tx *sql.Tx, registry, repo, tag string, d digest.Digest, t int64) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO tags(registry, repo, tag, digest, updated_at, checked_at) VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT(registry, repo, tag) DO UPDATE SET digest = excluded.digest,
			updated_at = CASE WHEN tags.digest = excluded.digest THEN tags.updated_at ELSE excluded.updated_at END,
			checked_at = excluded.checked_at`,
		registry, repo, tag, d.String(), t, t)
	if err != nil {
		return fmt.Errorf("set tag: %w", err)
	}
	return nil
}

// GetManifest returns manifest d of repo.
func (s *db) GetManifest(ctx context.Context, registry, repo string, d digest.Digest) (Manifest, error) {
	m := Manifest{Registry: registry, Repo: repo, Digest: d}
	var subject, ann string
	var created int64
	err := s.queryRow(ctx, `SELECT media_type, size, artifact_type, subject, annotations, created_at FROM manifests WHERE registry = $1 AND repo = $2 AND digest = $3`,
		registry, repo, d.String()).Scan(&m.MediaType, &m.Size, &m.ArtifactType, &subject, &ann, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return m, ErrNotFound
	}
	if err != nil {
		return m, fmt.Errorf("get manifest: %w", err)
	}
	m.Subject = digest.Digest(subject)
	m.CreatedAt = fromMicros(created)
	if ann != "" {
		_ = json.Unmarshal([]byte(ann), &m.Annotations)
	}
	return m, nil
}

// Tag is a tag's record.
type Tag struct {
	Digest    digest.Digest
	UpdatedAt time.Time
	CheckedAt time.Time
	PulledAt  time.Time // zero: not pulled (as far as flushed records go)
}

// GetTag resolves tag in repo.
func (s *db) GetTag(ctx context.Context, registry, repo, tag string) (Tag, error) {
	var d string
	var updated, checked, pulled int64
	err := s.queryRow(ctx, `SELECT digest, updated_at, checked_at, pulled_at FROM tags WHERE registry = $1 AND repo = $2 AND tag = $3`, registry, repo, tag).Scan(&d, &updated, &checked, &pulled)
	if errors.Is(err, sql.ErrNoRows) {
		return Tag{}, ErrNotFound
	}
	if err != nil {
		return Tag{}, fmt.Errorf("get tag: %w", err)
	}
	return Tag{Digest: digest.Digest(d), UpdatedAt: fromMicros(updated), CheckedAt: fromMicros(checked), PulledAt: fromMicros(pulled)}, nil
}

// TouchTag records that tag was revalidated against its upstream now.
func (s *db) TouchTag(ctx context.Context, registry, repo, tag string) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE tags SET checked_at = $1 WHERE registry = $2 AND repo = $3 AND tag = $4`, now(), registry, repo, tag)
		return err
	})
}

// DeleteTag removes tag from repo.
func (s *db) DeleteTag(ctx context.Context, registry, repo, tag string) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM tags WHERE registry = $1 AND repo = $2 AND tag = $3`, registry, repo, tag)
		if err != nil {
			return fmt.Errorf("delete tag: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		return nil
	})
}

// DeleteManifest removes manifest d from repo, with the tags that point at it.
func (s *db) DeleteManifest(ctx context.Context, registry, repo string, d digest.Digest) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM manifests WHERE registry = $1 AND repo = $2 AND digest = $3`, registry, repo, d.String())
		if err != nil {
			return fmt.Errorf("delete manifest: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM tags WHERE registry = $1 AND repo = $2 AND digest = $3`, registry, repo, d.String()); err != nil {
			return fmt.Errorf("delete manifest tags: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM manifest_refs WHERE registry = $1 AND repo = $2 AND manifest = $3`, registry, repo, d.String()); err != nil {
			return fmt.Errorf("delete manifest refs: %w", err)
		}
		return nil
	})
}

// ListTags returns up to n tags of repo after last, in lexical order, and
// whether more follow. n <= 0 means all.
func (s *db) ListTags(ctx context.Context, registry, repo, last string, n int) ([]string, bool, error) {
	return s.list(ctx, `SELECT tag FROM tags WHERE registry = $1 AND repo = $2 AND tag > $3 ORDER BY tag`, n, registry, repo, last)
}

// ListManifests returns up to n manifest digests of repo after `after`,
// in digest order, and whether more follow. n <= 0 means all.
func (s *db) ListManifests(ctx context.Context, registry, repo string, after digest.Digest, n int) ([]digest.Digest, bool, error) {
	return s.listDigests(ctx, `SELECT digest FROM manifests WHERE registry = $1 AND repo = $2 AND digest > $3 ORDER BY digest`, n, registry, repo, after.String())
}

// ListRepoBlobs returns up to n digests of the blobs linked to repo (not
// its manifests) after `after`, in digest order, and whether more follow.
func (s *db) ListRepoBlobs(ctx context.Context, registry, repo string, after digest.Digest, n int) ([]digest.Digest, bool, error) {
	return s.listDigests(ctx, `SELECT digest FROM repo_blobs WHERE registry = $1 AND repo = $2 AND digest > $3 ORDER BY digest`, n, registry, repo, after.String())
}

func (s *db) listDigests(ctx context.Context, q string, n int, args ...any) ([]digest.Digest, bool, error) {
	list, more, err := s.list(ctx, q, n, args...)
	out := make([]digest.Digest, len(list))
	for i, d := range list {
		out[i] = digest.Digest(d)
	}
	return out, more, err
}

// ListRepositories returns up to n repositories after last, and whether
// more follow.
func (s *db) ListRepositories(ctx context.Context, registry, last string, n int) ([]string, bool, error) {
	return s.list(ctx, `SELECT name FROM repositories WHERE registry = $1 AND name > $2 ORDER BY name`, n, registry, last)
}

func (s *db) list(ctx context.Context, q string, n int, args ...any) ([]string, bool, error) {
	q, args = limit(q, len(args)+1, n, args)
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, false, fmt.Errorf("list: %w", err)
	}
	defer rows.Close()
	out := []string{}
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, false, fmt.Errorf("list: %w", err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, false, fmt.Errorf("list: %w", err)
	}
	if n > 0 && len(out) > n {
		return out[:n], true, nil
	}
	return out, false, nil
}

// RepositoryExists reports whether repo holds any content.
func (s *db) RepositoryExists(ctx context.Context, registry, repo string) (bool, error) {
	var one int
	err := s.queryRow(ctx, `SELECT 1 FROM repositories WHERE registry = $1 AND name = $2`, registry, repo).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("repository exists: %w", err)
	}
	return true, nil
}

// Referrers lists the manifests of repo whose subject is d, optionally
// only those of artifactType.
func (s *db) Referrers(ctx context.Context, registry, repo string, d digest.Digest, artifactType string) ([]Referrer, error) {
	q := `SELECT digest, media_type, size, artifact_type, annotations FROM manifests WHERE registry = $1 AND repo = $2 AND subject = $3`
	args := []any{registry, repo, d.String()}
	if artifactType != "" {
		q += ` AND artifact_type = $4`
		args = append(args, artifactType)
	}
	rows, err := s.r.QueryContext(ctx, q+` ORDER BY created_at, digest`, args...)
	if err != nil {
		return nil, fmt.Errorf("referrers: %w", err)
	}
	defer rows.Close()
	var out []Referrer
	for rows.Next() {
		var r Referrer
		var dg, ann string
		if err := rows.Scan(&dg, &r.MediaType, &r.Size, &r.ArtifactType, &ann); err != nil {
			return nil, fmt.Errorf("referrers: %w", err)
		}
		r.Digest = digest.Digest(dg)
		if ann != "" {
			_ = json.Unmarshal([]byte(ann), &r.Annotations)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// CreateUpload records upload id for repo.
func (s *db) CreateUpload(ctx context.Context, registry, repo, id string) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO uploads(id, registry, repo, created_at) VALUES ($1, $2, $3, $4)`, id, registry, repo, now())
		if err != nil {
			return s.conflict(err, "create upload")
		}
		return nil
	})
}

// UploadExists returns whether upload id exists for repo.
func (s *db) UploadExists(ctx context.Context, registry, repo, id string) (bool, error) {
	var one int
	err := s.queryRow(ctx, `SELECT 1 FROM uploads WHERE id = $1 AND registry = $2 AND repo = $3`, id, registry, repo).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("upload: %w", err)
	}
	return true, nil
}

// DeleteUpload forgets upload id.
func (s *db) DeleteUpload(ctx context.Context, id string) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM uploads WHERE id = $1`, id)
		return err
	})
}

// schemaPushed marks repositories that hold pushed content (as opposed to
// content cached through a rule): only those block a new cache rule.
// Repositories from before it cannot be told apart, so they count as
// pushed: a rule over them is refused rather than hiding pushed images
// (the UPDATE was added later; it changes nothing for databases already
// past this migration, and a new database has no rows to update).
var schemaPushed = []string{
	`ALTER TABLE repositories ADD COLUMN pushed INTEGER NOT NULL DEFAULT 0`,
	`UPDATE repositories SET pushed = 1`,
}

// MarkPushed records that repo received pushed content. It writes only the
// first time, keeping pushes free of an extra transaction.
func (s *db) MarkPushed(ctx context.Context, registry, repo string) error {
	var pushed int
	err := s.queryRow(ctx, `SELECT pushed FROM repositories WHERE registry = $1 AND name = $2`, registry, repo).Scan(&pushed)
	if err == nil && pushed == 1 {
		return nil
	}
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("mark pushed: %w", err)
	}
	return s.tx(ctx, func(tx *sql.Tx) error {
		if err := ensureRepo(ctx, tx, registry, repo); err != nil {
			return fmt.Errorf("mark pushed: %w", err)
		}
		_, err := tx.ExecContext(ctx, `UPDATE repositories SET pushed = 1 WHERE registry = $1 AND name = $2`, registry, repo)
		return err
	})
}
