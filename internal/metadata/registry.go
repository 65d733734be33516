package metadata

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/opencontainers/go-digest"
)

const schemaRegistry = `
CREATE TABLE repositories (
	registry   TEXT NOT NULL,
	name       TEXT NOT NULL,
	created_at INTEGER NOT NULL,
	PRIMARY KEY (registry, name)
);
CREATE TABLE blobs (
	digest     TEXT PRIMARY KEY,
	size       INTEGER NOT NULL,
	created_at INTEGER NOT NULL
);
CREATE TABLE repo_blobs (
	registry TEXT NOT NULL,
	repo     TEXT NOT NULL,
	digest   TEXT NOT NULL REFERENCES blobs(digest),
	PRIMARY KEY (registry, repo, digest)
);
CREATE INDEX repo_blobs_digest ON repo_blobs(digest);
CREATE TABLE manifests (
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
);
CREATE INDEX manifests_subject ON manifests(registry, repo, subject) WHERE subject <> '';
CREATE TABLE manifest_refs (
	registry TEXT NOT NULL,
	repo     TEXT NOT NULL,
	manifest TEXT NOT NULL,
	child    TEXT NOT NULL,
	kind     TEXT NOT NULL,
	PRIMARY KEY (registry, repo, manifest, child)
);
CREATE INDEX manifest_refs_child ON manifest_refs(child);
CREATE TABLE tags (
	registry   TEXT NOT NULL,
	repo       TEXT NOT NULL,
	tag        TEXT NOT NULL,
	digest     TEXT NOT NULL,
	updated_at INTEGER NOT NULL,
	checked_at INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (registry, repo, tag)
);
CREATE INDEX tags_digest ON tags(registry, repo, digest);
CREATE TABLE uploads (
	id         TEXT PRIMARY KEY,
	registry   TEXT NOT NULL,
	repo       TEXT NOT NULL,
	created_at INTEGER NOT NULL
)`

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
}

// Referrer is one entry of a referrers listing.
type Referrer struct {
	Digest       digest.Digest
	MediaType    string
	Size         int64
	ArtifactType string
	Annotations  map[string]string
}

func now() int64 { return time.Now().UnixMilli() }

func ensureRepo(ctx context.Context, tx *sql.Tx, registry, repo string) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO repositories(registry, name, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING`, registry, repo, now())
	return err
}

// LinkBlob records that blob d (size bytes, already committed to the blob
// store) belongs to repository repo.
func (s *SQLite) LinkBlob(ctx context.Context, registry, repo string, d digest.Digest, size int64) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		if err := ensureRepo(ctx, tx, registry, repo); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO blobs(digest, size, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING`, d.String(), size, now()); err != nil {
			return fmt.Errorf("link blob: %w", err)
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO repo_blobs(registry, repo, digest) VALUES (?, ?, ?) ON CONFLICT DO NOTHING`, registry, repo, d.String())
		if err != nil {
			return fmt.Errorf("link blob: %w", err)
		}
		return nil
	})
}

// BlobSize returns the size of blob d if it is linked to repo.
func (s *SQLite) BlobSize(ctx context.Context, registry, repo string, d digest.Digest) (int64, error) {
	var size int64
	err := s.queryRow(ctx, `SELECT b.size FROM repo_blobs rb JOIN blobs b ON b.digest = rb.digest WHERE rb.registry = ? AND rb.repo = ? AND rb.digest = ?`, registry, repo, d.String()).Scan(&size)
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
func (s *SQLite) References(ctx context.Context, registry, repo string, d digest.Digest) (bool, error) {
	var one int
	err := s.queryRow(ctx, `SELECT 1 FROM manifest_refs WHERE child = ? AND registry = ? AND repo = ? LIMIT 1`, d.String(), registry, repo).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("references: %w", err)
	}
	return true, nil
}

// UnlinkBlob removes blob d from repo. The bytes stay until garbage collection.
func (s *SQLite) UnlinkBlob(ctx context.Context, registry, repo string, d digest.Digest) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM repo_blobs WHERE registry = ? AND repo = ? AND digest = ?`, registry, repo, d.String())
		if err != nil {
			return fmt.Errorf("unlink blob: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		return nil
	})
}

// MissingRefs returns the references of m that repo does not hold.
func (s *SQLite) MissingRefs(ctx context.Context, registry, repo string, refs []Ref) ([]Ref, error) {
	var missing []Ref
	for _, ref := range refs {
		q := `SELECT 1 FROM repo_blobs WHERE registry = ? AND repo = ? AND digest = ?`
		if ref.Kind == RefManifest {
			q = `SELECT 1 FROM manifests WHERE registry = ? AND repo = ? AND digest = ?`
		}
		var one int
		err := s.queryRow(ctx, q, registry, repo, ref.Digest.String()).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			missing = append(missing, ref)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("check refs: %w", err)
		}
	}
	return missing, nil
}

// PutManifest records m (whose bytes are committed in the blob store) and
// points tags at it, in one transaction.
func (s *SQLite) PutManifest(ctx context.Context, m Manifest, tags ...string) error {
	var ann string
	if m.Subject != "" && len(m.Annotations) > 0 {
		b, _ := json.Marshal(m.Annotations)
		ann = string(b)
	}
	return s.tx(ctx, func(tx *sql.Tx) error {
		if err := ensureRepo(ctx, tx, m.Registry, m.Repo); err != nil {
			return fmt.Errorf("put manifest: %w", err)
		}
		t := now()
		if _, err := tx.ExecContext(ctx, `INSERT INTO blobs(digest, size, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING`, m.Digest.String(), m.Size, t); err != nil {
			return fmt.Errorf("put manifest: %w", err)
		}
		res, err := tx.ExecContext(ctx, `INSERT INTO manifests(registry, repo, digest, media_type, size, artifact_type, subject, annotations, created_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
			m.Registry, m.Repo, m.Digest.String(), m.MediaType, m.Size, m.ArtifactType, m.Subject.String(), ann, t)
		if err != nil {
			return fmt.Errorf("put manifest: %w", err)
		}
		if n, _ := res.RowsAffected(); n > 0 {
			for _, ref := range m.Refs {
				if _, err := tx.ExecContext(ctx, `INSERT INTO manifest_refs(registry, repo, manifest, child, kind) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
					m.Registry, m.Repo, m.Digest.String(), ref.Digest.String(), ref.Kind); err != nil {
					return fmt.Errorf("put manifest refs: %w", err)
				}
			}
		}
		for _, tag := range tags {
			if err := setTag(ctx, tx, m.Registry, m.Repo, tag, m.Digest, t); err != nil {
				return err
			}
		}
		return nil
	})
}

func setTag(ctx context.Context, tx *sql.Tx, registry, repo, tag string, d digest.Digest, t int64) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO tags(registry, repo, tag, digest, updated_at, checked_at) VALUES (?, ?, ?, ?, ?, ?)
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
func (s *SQLite) GetManifest(ctx context.Context, registry, repo string, d digest.Digest) (Manifest, error) {
	m := Manifest{Registry: registry, Repo: repo, Digest: d}
	var subject, ann string
	var created int64
	err := s.queryRow(ctx, `SELECT media_type, size, artifact_type, subject, annotations, created_at FROM manifests WHERE registry = ? AND repo = ? AND digest = ?`,
		registry, repo, d.String()).Scan(&m.MediaType, &m.Size, &m.ArtifactType, &subject, &ann, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return m, ErrNotFound
	}
	if err != nil {
		return m, fmt.Errorf("get manifest: %w", err)
	}
	m.Subject = digest.Digest(subject)
	m.CreatedAt = time.UnixMilli(created)
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
}

// GetTag resolves tag in repo.
func (s *SQLite) GetTag(ctx context.Context, registry, repo, tag string) (Tag, error) {
	var d string
	var updated, checked int64
	err := s.queryRow(ctx, `SELECT digest, updated_at, checked_at FROM tags WHERE registry = ? AND repo = ? AND tag = ?`, registry, repo, tag).Scan(&d, &updated, &checked)
	if errors.Is(err, sql.ErrNoRows) {
		return Tag{}, ErrNotFound
	}
	if err != nil {
		return Tag{}, fmt.Errorf("get tag: %w", err)
	}
	return Tag{Digest: digest.Digest(d), UpdatedAt: time.UnixMilli(updated), CheckedAt: time.UnixMilli(checked)}, nil
}

// TouchTag records that tag was revalidated against its upstream now.
func (s *SQLite) TouchTag(ctx context.Context, registry, repo, tag string) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE tags SET checked_at = ? WHERE registry = ? AND repo = ? AND tag = ?`, now(), registry, repo, tag)
		return err
	})
}

// DeleteTag removes tag from repo.
func (s *SQLite) DeleteTag(ctx context.Context, registry, repo, tag string) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM tags WHERE registry = ? AND repo = ? AND tag = ?`, registry, repo, tag)
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
func (s *SQLite) DeleteManifest(ctx context.Context, registry, repo string, d digest.Digest) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM manifests WHERE registry = ? AND repo = ? AND digest = ?`, registry, repo, d.String())
		if err != nil {
			return fmt.Errorf("delete manifest: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM tags WHERE registry = ? AND repo = ? AND digest = ?`, registry, repo, d.String()); err != nil {
			return fmt.Errorf("delete manifest tags: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM manifest_refs WHERE registry = ? AND repo = ? AND manifest = ?`, registry, repo, d.String()); err != nil {
			return fmt.Errorf("delete manifest refs: %w", err)
		}
		return nil
	})
}

// ListTags returns up to n tags of repo after last, in lexical order, and
// whether more follow. n <= 0 means all.
func (s *SQLite) ListTags(ctx context.Context, registry, repo, last string, n int) ([]string, bool, error) {
	return s.list(ctx, `SELECT tag FROM tags WHERE registry = ? AND repo = ? AND tag > ? ORDER BY tag LIMIT ?`, n, registry, repo, last)
}

// ListRepositories returns up to n repositories after last, and whether
// more follow.
func (s *SQLite) ListRepositories(ctx context.Context, registry, last string, n int) ([]string, bool, error) {
	return s.list(ctx, `SELECT name FROM repositories WHERE registry = ? AND name > ? ORDER BY name LIMIT ?`, n, registry, last)
}

func (s *SQLite) list(ctx context.Context, q string, n int, args ...any) ([]string, bool, error) {
	limit := n + 1
	if n <= 0 {
		limit = -1
	}
	rows, err := s.r.QueryContext(ctx, q, append(args, limit)...)
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
func (s *SQLite) RepositoryExists(ctx context.Context, registry, repo string) (bool, error) {
	var one int
	err := s.queryRow(ctx, `SELECT 1 FROM repositories WHERE registry = ? AND name = ?`, registry, repo).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

// Referrers lists the manifests of repo whose subject is d, optionally
// only those of artifactType.
func (s *SQLite) Referrers(ctx context.Context, registry, repo string, d digest.Digest, artifactType string) ([]Referrer, error) {
	q := `SELECT digest, media_type, size, artifact_type, annotations FROM manifests WHERE registry = ? AND repo = ? AND subject = ?`
	args := []any{registry, repo, d.String()}
	if artifactType != "" {
		q += ` AND artifact_type = ?`
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
func (s *SQLite) CreateUpload(ctx context.Context, registry, repo, id string) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO uploads(id, registry, repo, created_at) VALUES (?, ?, ?, ?)`, id, registry, repo, now())
		if err != nil {
			return fmt.Errorf("create upload: %w", err)
		}
		return nil
	})
}

// UploadRepo returns whether upload id exists for repo.
func (s *SQLite) UploadExists(ctx context.Context, registry, repo, id string) (bool, error) {
	var one int
	err := s.queryRow(ctx, `SELECT 1 FROM uploads WHERE id = ? AND registry = ? AND repo = ?`, id, registry, repo).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("upload: %w", err)
	}
	return true, nil
}

// DeleteUpload forgets upload id.
func (s *SQLite) DeleteUpload(ctx context.Context, id string) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM uploads WHERE id = ?`, id)
		return err
	})
}

// schemaUploadState keeps an upload session's progress in its row, so
// that any replica can continue it: staged_size is how many bytes it holds,
// state the ingest writer's opaque state (staged parts, hash states).
const schemaUploadState = `ALTER TABLE uploads ADD COLUMN staged_size INTEGER NOT NULL DEFAULT 0;
ALTER TABLE uploads ADD COLUMN state BLOB`

// LoadUploadState returns how many bytes upload id holds and the state
// saved with them (nil for a new session), or ErrNotFound.
func (s *SQLite) LoadUploadState(ctx context.Context, id string) (int64, []byte, error) {
	var size int64
	var state []byte
	err := s.queryRow(ctx, `SELECT staged_size, state FROM uploads WHERE id = ?`, id).Scan(&size, &state)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil, ErrNotFound
	}
	if err != nil {
		return 0, nil, fmt.Errorf("load upload state: %w", err)
	}
	return size, state, nil
}

// SaveUploadState records that upload id now holds size bytes described by
// state, only if it still holds from bytes: of two requests writing the
// same session, one wins and the other gets ErrConflict (ErrNotFound when
// the session is gone).
func (s *SQLite) SaveUploadState(ctx context.Context, id string, from, size int64, state []byte) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE uploads SET staged_size = ?, state = ? WHERE id = ? AND staged_size = ?`, size, state, id, from)
		if err != nil {
			return fmt.Errorf("save upload state: %w", err)
		}
		if n, err := res.RowsAffected(); err != nil || n == 1 {
			return err
		}
		var one int
		err = tx.QueryRowContext(ctx, `SELECT 1 FROM uploads WHERE id = ?`, id).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("save upload state: %w", err)
		}
		return fmt.Errorf("%w: upload %s no longer holds %d bytes", ErrConflict, id, from)
	})
}

// schemaPushed marks repositories that hold pushed content (as opposed to
// content cached through a rule): only those block a new cache rule.
// Repositories from before it cannot be told apart, so they count as
// pushed: a rule over them is refused rather than hiding pushed images
// (the UPDATE was added later; it changes nothing for databases already
// past this migration, and a new database has no rows to update).
const schemaPushed = `ALTER TABLE repositories ADD COLUMN pushed INTEGER NOT NULL DEFAULT 0;
UPDATE repositories SET pushed = 1`

// MarkPushed records that repo received pushed content. It writes only the
// first time, keeping pushes free of an extra transaction.
func (s *SQLite) MarkPushed(ctx context.Context, registry, repo string) error {
	var pushed int
	err := s.queryRow(ctx, `SELECT pushed FROM repositories WHERE registry = ? AND name = ?`, registry, repo).Scan(&pushed)
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
		_, err := tx.ExecContext(ctx, `UPDATE repositories SET pushed = 1 WHERE registry = ? AND name = ?`, registry, repo)
		return err
	})
}
