package metadata

import (
	"context"
	"fmt"
)

// RepoUsage is what one repository holds.
type RepoUsage struct {
	Registry, Repo string
	Blobs          int64 // blobs linked to the repository
	BlobBytes      int64
	Manifests      int64
	ManifestBytes  int64
}

// Usage returns what each repository holds, from two grouped scans
// (repo_blobs by its primary key, manifests by theirs). A blob shared by
// two repositories counts in each.
func (s *db) Usage(ctx context.Context) ([]RepoUsage, error) {
	type key struct{ reg, repo string }
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
	for _, q := range []struct {
		sql  string
		dest func(*RepoUsage) (*int64, *int64)
	}{
		{`SELECT rb.registry, rb.repo, COUNT(*), CAST(COALESCE(SUM(b.size), 0) AS BIGINT) FROM repo_blobs rb JOIN blobs b ON b.digest = rb.digest GROUP BY rb.registry, rb.repo`,
			func(u *RepoUsage) (*int64, *int64) { return &u.Blobs, &u.BlobBytes }},
		{`SELECT registry, repo, COUNT(*), CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM manifests GROUP BY registry, repo`,
			func(u *RepoUsage) (*int64, *int64) { return &u.Manifests, &u.ManifestBytes }},
	} {
		rows, err := s.r.QueryContext(ctx, q.sql)
		if err != nil {
			return nil, fmt.Errorf("usage: %w", err)
		}
		for rows.Next() {
			var k key
			var n, size int64
			if err := rows.Scan(&k.reg, &k.repo, &n, &size); err != nil {
				rows.Close()
				return nil, fmt.Errorf("usage: %w", err)
			}
			pn, psize := q.dest(get(k))
			*pn, *psize = n, size
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("usage: %w", err)
		}
	}
	out := make([]RepoUsage, 0, len(order))
	for _, k := range order {
		out = append(out, *byRepo[k])
	}
	return out, nil
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
