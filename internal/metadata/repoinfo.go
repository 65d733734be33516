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

// RepoInfo describes one repository (`arca repository show`).
type RepoInfo struct {
	Name      string
	CreatedAt time.Time
	// UpdatedAt is the latest manifest stored or tag moved (CreatedAt if
	// neither).
	UpdatedAt time.Time
	PulledAt  time.Time // zero: never pulled (as far as flushed records go)
	Manifests int64
	Tags      int64
	Pushed    bool
}

// TagInfo is one tag with its times.
type TagInfo struct {
	Name      string
	Digest    digest.Digest
	UpdatedAt time.Time // when the tag was last set
	PulledAt  time.Time
	Signed    bool // its manifest has a signature (see SignatureArtifactTypes)
}

// ManifestInfo is one manifest with its times and tags.
type ManifestInfo struct {
	Digest    digest.Digest
	MediaType string
	Size      int64
	CreatedAt time.Time
	PulledAt  time.Time
	Tags      []string
	Signed    bool
	Attrs     ManifestAttrs
}

// ManifestAttrs are what ACR's manifest listing shows beyond the record:
// worked out once, when the manifest is stored, so that a listing reads
// no blob per row. Described is false for rows stored before they were
// recorded and for images whose config blob was not local yet (a
// pull-through stores the manifest before the client fetches the
// config); the registry describes those when they are first listed.
type ManifestAttrs struct {
	ConfigMediaType  string
	Architecture, OS string
	// Variant and OSVersion complete an image's platform (OCI's variant,
	// e.g. arm's v7, and os.version, e.g. a Windows build).
	Variant, OSVersion string
	// ImageSize is the manifest's bytes plus the config and layers it
	// declares (for an index, its own bytes).
	ImageSize  int64
	References []PlatformRef // an index's children
	// Signature: it is a signature (Notary Project or cosign), so its
	// subject counts as signed.
	Signature bool
	Described bool
}

// PlatformRef is one child of an index with the platform the index
// declares for it.
type PlatformRef struct {
	Digest       digest.Digest `json:"digest"`
	Architecture string        `json:"architecture,omitempty"`
	OS           string        `json:"os,omitempty"`
	Variant      string        `json:"variant,omitempty"`
	OSVersion    string        `json:"os.version,omitempty"`
}

func (a ManifestAttrs) refsJSON() string {
	if len(a.References) == 0 {
		return ""
	}
	b, _ := json.Marshal(a.References)
	return string(b)
}

// schemaManifestAttrs records ManifestAttrs per manifest. Existing rows
// keep described = 0 and are described when first listed (a migration
// cannot read the blobs).
var schemaManifestAttrs = []string{
	`ALTER TABLE manifests ADD COLUMN config_media_type TEXT NOT NULL DEFAULT ''`,
	`ALTER TABLE manifests ADD COLUMN architecture TEXT NOT NULL DEFAULT ''`,
	`ALTER TABLE manifests ADD COLUMN os TEXT NOT NULL DEFAULT ''`,
	`ALTER TABLE manifests ADD COLUMN image_size BIGINT NOT NULL DEFAULT 0`,
	`ALTER TABLE manifests ADD COLUMN platform_refs TEXT NOT NULL DEFAULT ''`,
	`ALTER TABLE manifests ADD COLUMN described INTEGER NOT NULL DEFAULT 0`,
	`ALTER TABLE manifests ADD COLUMN signature INTEGER NOT NULL DEFAULT 0`,
	// What the artifact type alone tells (notation, cosign referrers);
	// cosign's legacy signatures are told by their layers, when described.
	`UPDATE manifests SET signature = 1 WHERE artifact_type IN ('application/vnd.cncf.notary.signature', 'application/vnd.dev.cosign.artifact.sig.v1+json')`,
}

// schemaManifestVariant records the rest of an image's platform (variant,
// os.version). Rows described before it have none, and a migration cannot
// read the blobs: every row with a platform (an image or an index) is
// marked undescribed, so that it is described again, once, when first
// listed, and keeps what it recorded until then. A rule "arm and no
// variant means undescribed" would instead re-read every arm64 image
// that has no variant (most) at every listing.
var schemaManifestVariant = []string{
	`ALTER TABLE manifests ADD COLUMN variant TEXT NOT NULL DEFAULT ''`,
	`ALTER TABLE manifests ADD COLUMN os_version TEXT NOT NULL DEFAULT ''`,
	`UPDATE manifests SET described = 0 WHERE described = 1 AND (architecture <> '' OR platform_refs <> '')`,
}

// signedSQL is true when the manifest whose digest is the column
// expression d has a signature in the same repository (registry and repo
// are $1 and $2): a signature referrer, or a signature under cosign's
// legacy tag sha256-<hex>.sig.
func signedSQL(d string) string {
	return `(EXISTS (SELECT 1 FROM manifests s WHERE s.registry = $1 AND s.repo = $2 AND s.subject = ` + d + ` AND s.signature = 1)
		OR EXISTS (SELECT 1 FROM tags c JOIN manifests cm ON cm.registry = c.registry AND cm.repo = c.repo AND cm.digest = c.digest
			WHERE c.registry = $1 AND c.repo = $2 AND c.tag = REPLACE(` + d + `, ':', '-') || '.sig' AND cm.signature = 1))`
}

// Orders of InfoQuery.
const (
	OrderName     = ""          // by tag name or manifest digest
	OrderTimeAsc  = "time_asc"  // oldest update first
	OrderTimeDesc = "time_desc" // newest update first
)

// InfoQuery pages a tag or manifest listing: up to N items (<= 0: all)
// after the one named Last (a tag name or a digest) in Order.
type InfoQuery struct {
	Last  string
	N     int
	Order string
}

// RepositoryInfo returns repo's details; ErrNotFound if it holds nothing.
func (s *db) RepositoryInfo(ctx context.Context, registry, repo string) (RepoInfo, error) {
	var created, mUpdated, tUpdated, mPulled, tPulled, manifests, tags int64
	var pushed int
	err := s.queryRow(ctx, `SELECT r.created_at, r.pushed,
		COALESCE((SELECT MAX(created_at) FROM manifests WHERE registry = $1 AND repo = $2), 0),
		COALESCE((SELECT MAX(updated_at) FROM tags WHERE registry = $1 AND repo = $2), 0),
		COALESCE((SELECT MAX(pulled_at) FROM manifests WHERE registry = $1 AND repo = $2), 0),
		COALESCE((SELECT MAX(pulled_at) FROM tags WHERE registry = $1 AND repo = $2), 0),
		(SELECT COUNT(*) FROM manifests WHERE registry = $1 AND repo = $2),
		(SELECT COUNT(*) FROM tags WHERE registry = $1 AND repo = $2)
		FROM repositories r WHERE r.registry = $1 AND r.name = $2`, registry, repo).
		Scan(&created, &pushed, &mUpdated, &tUpdated, &mPulled, &tPulled, &manifests, &tags)
	if errors.Is(err, sql.ErrNoRows) {
		return RepoInfo{}, ErrNotFound
	}
	if err != nil {
		return RepoInfo{}, fmt.Errorf("repository info: %w", err)
	}
	return RepoInfo{Name: repo, CreatedAt: fromMicros(created), UpdatedAt: fromMicros(max(created, mUpdated, tUpdated)),
		PulledAt: fromMicros(max(mPulled, tPulled)), Manifests: manifests, Tags: tags, Pushed: pushed != 0}, nil
}

// infoOrder returns the ORDER BY and the "after Last" condition of an
// InfoQuery over table t keyed by key with time column at. A time order
// continues after Last's (time, key), read in the query itself.
func infoOrder(q InfoQuery, t, key, at string) (cond, order string, err error) {
	same := ` WHERE registry = $1 AND repo = $2 AND ` + key + ` = $3`
	switch q.Order {
	case OrderName:
		return key + ` > $3`, key, nil
	case OrderTimeAsc:
		if q.Last == "" {
			return `$3 = ''`, at + `, ` + key, nil
		}
		return `(` + at + ` > (SELECT ` + at + ` FROM ` + t + same + `) OR (` + at + ` = (SELECT ` + at + ` FROM ` + t + same + `) AND ` + key + ` > $3))`, at + `, ` + key, nil
	case OrderTimeDesc:
		if q.Last == "" {
			return `$3 = ''`, at + ` DESC, ` + key + ` DESC`, nil
		}
		return `(` + at + ` < (SELECT ` + at + ` FROM ` + t + same + `) OR (` + at + ` = (SELECT ` + at + ` FROM ` + t + same + `) AND ` + key + ` < $3))`, at + ` DESC, ` + key + ` DESC`, nil
	}
	return "", "", fmt.Errorf("unknown order %q (want %q or %q)", q.Order, OrderTimeAsc, OrderTimeDesc)
}

// ListTagInfo pages repo's tags in q.Order; it reports whether more follow.
func (s *db) ListTagInfo(ctx context.Context, registry, repo string, q InfoQuery) ([]TagInfo, bool, error) {
	cond, order, err := infoOrder(q, "tags", "tag", "updated_at")
	if err != nil {
		return nil, false, err
	}
	query, args := limit(`SELECT tag, digest, updated_at, pulled_at, `+signedSQL("t.digest")+` FROM tags t WHERE registry = $1 AND repo = $2 AND `+cond+` ORDER BY `+order, 4, q.N,
		[]any{registry, repo, q.Last})
	rows, err := s.r.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, false, fmt.Errorf("list tags: %w", err)
	}
	defer rows.Close()
	out := []TagInfo{}
	for rows.Next() {
		var t TagInfo
		var d string
		var updated, pulled int64
		if err := rows.Scan(&t.Name, &d, &updated, &pulled, &t.Signed); err != nil {
			return nil, false, fmt.Errorf("list tags: %w", err)
		}
		t.Digest, t.UpdatedAt, t.PulledAt = digest.Digest(d), fromMicros(updated), fromMicros(pulled)
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, false, fmt.Errorf("list tags: %w", err)
	}
	if q.N > 0 && len(out) > q.N {
		return out[:q.N], true, nil
	}
	return out, false, nil
}

// ListManifestInfo pages repo's manifests (with their tags) in q.Order;
// it reports whether more follow.
func (s *db) ListManifestInfo(ctx context.Context, registry, repo string, q InfoQuery) ([]ManifestInfo, bool, error) {
	cond, order, err := infoOrder(q, "manifests", "digest", "created_at")
	if err != nil {
		return nil, false, err
	}
	query, args := limit(manifestInfoColumns+` WHERE registry = $1 AND repo = $2 AND `+cond+` ORDER BY `+order, 4, q.N,
		[]any{registry, repo, q.Last})
	out, err := s.scanManifestInfo(ctx, query, args)
	if err != nil {
		return nil, false, err
	}
	more := false
	if q.N > 0 && len(out) > q.N {
		out, more = out[:q.N], true
	}
	if err := s.manifestTags(ctx, registry, repo, out); err != nil {
		return nil, false, err
	}
	return out, more, nil
}

// manifestInfoColumns selects what scanManifestInfo reads.
var manifestInfoColumns = `SELECT digest, media_type, size, created_at, pulled_at, config_media_type, architecture, os, variant, os_version, image_size, platform_refs, signature, described, ` +
	signedSQL("m.digest") + ` FROM manifests m`

// ManifestInfo returns manifest d of repo with its tags; ErrNotFound if
// repo has no such manifest.
func (s *db) ManifestInfo(ctx context.Context, registry, repo string, d digest.Digest) (ManifestInfo, error) {
	out, err := s.scanManifestInfo(ctx, manifestInfoColumns+` WHERE registry = $1 AND repo = $2 AND digest = $3`, []any{registry, repo, d.String()})
	if err != nil {
		return ManifestInfo{}, err
	}
	if len(out) == 0 {
		return ManifestInfo{}, ErrNotFound
	}
	if err := s.manifestTags(ctx, registry, repo, out); err != nil {
		return ManifestInfo{}, err
	}
	return out[0], nil
}

// SetManifestAttrs records the attributes of manifest d worked out after
// it was stored; ErrNotFound if repo has no such manifest.
func (s *db) SetManifestAttrs(ctx context.Context, registry, repo string, d digest.Digest, a ManifestAttrs) error {
	res, err := s.w.ExecContext(ctx, `UPDATE manifests SET config_media_type = $4, architecture = $5, os = $6, variant = $7, os_version = $8,
		image_size = $9, platform_refs = $10, signature = $11, described = $12 WHERE registry = $1 AND repo = $2 AND digest = $3`,
		registry, repo, d.String(), a.ConfigMediaType, a.Architecture, a.OS, a.Variant, a.OSVersion, a.ImageSize, a.refsJSON(), b2i(a.Signature), b2i(a.Described))
	if err != nil {
		return fmt.Errorf("set manifest attributes: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	return nil
}

func (s *db) manifestTags(ctx context.Context, registry, repo string, out []ManifestInfo) error {
	for i := range out {
		tags, _, err := s.list(ctx, `SELECT tag FROM tags WHERE registry = $1 AND repo = $2 AND digest = $3 ORDER BY tag`, 0, registry, repo, out[i].Digest.String())
		if err != nil {
			return fmt.Errorf("list manifest tags: %w", err)
		}
		out[i].Tags = tags
	}
	return nil
}

func (s *db) scanManifestInfo(ctx context.Context, query string, args []any) ([]ManifestInfo, error) {
	rows, err := s.r.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("list manifests: %w", err)
	}
	defer rows.Close()
	out := []ManifestInfo{}
	for rows.Next() {
		var m ManifestInfo
		var d, refs string
		var created, pulled int64
		var signature, described int
		if err := rows.Scan(&d, &m.MediaType, &m.Size, &created, &pulled, &m.Attrs.ConfigMediaType, &m.Attrs.Architecture, &m.Attrs.OS,
			&m.Attrs.Variant, &m.Attrs.OSVersion, &m.Attrs.ImageSize, &refs, &signature, &described, &m.Signed); err != nil {
			return nil, fmt.Errorf("list manifests: %w", err)
		}
		m.Digest, m.CreatedAt, m.PulledAt, m.Attrs.Described = digest.Digest(d), fromMicros(created), fromMicros(pulled), described != 0
		m.Attrs.Signature = signature != 0
		if refs != "" {
			if err := json.Unmarshal([]byte(refs), &m.Attrs.References); err != nil {
				return nil, fmt.Errorf("manifest %s references: %w", d, err)
			}
		}
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list manifests: %w", err)
	}
	return out, nil
}

// repoTables hold a repository's rows; DeleteRepository clears them.
var repoTables = []struct{ table, column string }{
	{"tags", "repo"}, {"manifest_refs", "repo"}, {"manifests", "repo"}, {"repo_blobs", "repo"}, {"repositories", "name"},
}

// DeleteRepository removes repo's tags, manifests and blob links in one
// transaction (open upload sessions expire as usual) and returns the manifests and tags it
// deleted; ErrNotFound if repo holds nothing. The blob store keeps the
// bytes until garbage collection.
func (s *db) DeleteRepository(ctx context.Context, registry, repo string) (manifests []digest.Digest, tags []string, err error) {
	err = s.tx(ctx, func(tx *sql.Tx) error {
		manifests, tags = nil, nil
		var one int
		err := tx.QueryRowContext(ctx, `SELECT 1 FROM repositories WHERE registry = $1 AND name = $2`, registry, repo).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		if tags, err = txStrings(ctx, tx, `SELECT tag FROM tags WHERE registry = $1 AND repo = $2 ORDER BY tag`, registry, repo); err != nil {
			return err
		}
		ds, err := txStrings(ctx, tx, `SELECT digest FROM manifests WHERE registry = $1 AND repo = $2 ORDER BY digest`, registry, repo)
		if err != nil {
			return err
		}
		for _, d := range ds {
			manifests = append(manifests, digest.Digest(d))
		}
		for _, t := range repoTables {
			if _, err := tx.ExecContext(ctx, `DELETE FROM `+t.table+` WHERE registry = $1 AND `+t.column+` = $2`, registry, repo); err != nil {
				return fmt.Errorf("%s: %w", t.table, err)
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, ErrNotFound) {
		err = fmt.Errorf("delete repository %s: %w", repo, err)
	}
	return manifests, tags, err
}

func txStrings(ctx context.Context, tx *sql.Tx, q string, args ...any) ([]string, error) {
	rows, err := tx.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []string{}
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}
