package metadata

import (
	"context"
	"fmt"
	"strings"
)

// RepoUsage is what one repository holds.
type RepoUsage struct {
	Registry, Repo string
	// Pushed: the repository received pushed content (else it is cached
	// content of a rule, which eviction may take away).
	Pushed        bool
	Blobs         int64 // blobs linked to the repository
	BlobBytes     int64
	Manifests     int64
	ManifestBytes int64
}

// Bytes is what the repository holds in all.
func (u RepoUsage) Bytes() int64 { return u.BlobBytes + u.ManifestBytes }

// Usage returns what each repository holds, from two grouped scans
// (repo_blobs by its primary key, manifests by theirs). A blob shared by
// two repositories counts in each.
func (s *db) Usage(ctx context.Context) ([]RepoUsage, error) { return s.usage(ctx, "") }

// RegistryUsage is Usage of one registry's repositories.
func (s *db) RegistryUsage(ctx context.Context, registry string) ([]RepoUsage, error) {
	return s.usage(ctx, registry)
}

func (s *db) usage(ctx context.Context, registry string) ([]RepoUsage, error) {
	type key = repoKey
	byRepo := map[key]*RepoUsage{}
	var order []key
	get := func(k key) *RepoUsage {
		u, ok := byRepo[k]
		if !ok {
			u = &RepoUsage{Registry: k.reg, Repo: k.repo}
			byRepo[k] = u
			order = append(order, k)
		}
		return u
	}
	var args []any
	blobWhere, manifestWhere := "", ""
	if registry != "" {
		args = []any{registry}
		blobWhere, manifestWhere = ` WHERE rb.registry = $1`, ` WHERE registry = $1`
	}
	for _, q := range []struct {
		sql  string
		dest func(*RepoUsage) (*int64, *int64)
	}{
		{`SELECT rb.registry, rb.repo, COUNT(*), CAST(COALESCE(SUM(b.size), 0) AS BIGINT) FROM repo_blobs rb JOIN blobs b ON b.digest = rb.digest` + blobWhere + ` GROUP BY rb.registry, rb.repo`,
			func(u *RepoUsage) (*int64, *int64) { return &u.Blobs, &u.BlobBytes }},
		{`SELECT registry, repo, COUNT(*), CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM manifests` + manifestWhere + ` GROUP BY registry, repo`,
			func(u *RepoUsage) (*int64, *int64) { return &u.Manifests, &u.ManifestBytes }},
	} {
		if err := s.scanUsage(ctx, q.sql, args, func(k key, n, size int64) {
			pn, psize := q.dest(get(k))
			*pn, *psize = n, size
		}); err != nil {
			return nil, err
		}
	}
	repoWhere := ` WHERE pushed <> 0`
	if registry != "" {
		repoWhere += ` AND registry = $1`
	}
	if err := s.scanUsage(ctx, `SELECT registry, name, 0, 0 FROM repositories`+repoWhere, args, func(k key, _, _ int64) {
		if u, ok := byRepo[k]; ok {
			u.Pushed = true
		}
	}); err != nil {
		return nil, err
	}
	out := make([]RepoUsage, 0, len(order))
	for _, k := range order {
		out = append(out, *byRepo[k])
	}
	return out, nil
}

// PushedBytes is what registry's repositories with pushed content hold
// (as RegistryUsage counts it: each blob link and manifest of them): the
// push quota's usage. It reads only those repositories' rows, not the
// cached ones a pull-through registry mostly holds, and returns one sum.
func (s *db) PushedBytes(ctx context.Context, registry string) (int64, error) {
	var n int64
	err := s.queryRow(ctx, `SELECT CAST(COALESCE((SELECT SUM(b.size) FROM repo_blobs rb JOIN blobs b ON b.digest = rb.digest
			WHERE rb.registry = $1 AND rb.repo IN (SELECT name FROM repositories WHERE registry = $1 AND pushed <> 0)), 0)
		+ COALESCE((SELECT SUM(m.size) FROM manifests m
			WHERE m.registry = $1 AND m.repo IN (SELECT name FROM repositories WHERE registry = $1 AND pushed <> 0)), 0) AS BIGINT)`,
		strings.ToLower(registry)).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("pushed bytes: %w", err)
	}
	return n, nil
}

type repoKey struct{ reg, repo string }

func (s *db) scanUsage(ctx context.Context, q string, args []any, fn func(k repoKey, n, size int64)) error {
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("usage: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var k repoKey
		var n, size int64
		if err := rows.Scan(&k.reg, &k.repo, &n, &size); err != nil {
			return fmt.Errorf("usage: %w", err)
		}
		fn(k, n, size)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("usage: %w", err)
	}
	return nil
}

// CredentialHealthRow is the last health check of one credential set.
type CredentialHealthRow struct {
	Registry, Name, Status string // Status "" until first checked
}

// CredentialHealth lists every credential set's last health status.
func (s *db) CredentialHealth(ctx context.Context) ([]CredentialHealthRow, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT registry, name, health_status FROM credential_sets ORDER BY registry, name_key`)
	if err != nil {
		return nil, fmt.Errorf("credential health: %w", err)
	}
	defer rows.Close()
	var out []CredentialHealthRow
	for rows.Next() {
		var h CredentialHealthRow
		if err := rows.Scan(&h.Registry, &h.Name, &h.Status); err != nil {
			return nil, fmt.Errorf("credential health: %w", err)
		}
		out = append(out, h)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("credential health: %w", err)
	}
	return out, nil
}
