package metadata

import (
	"context"
	"fmt"
	"strings"

	"github.com/opencontainers/go-digest"
)

// syncKeptDepth bounds the walk from a synced tag's manifest to what it
// references (as the syncer's maxDepth bounds nested indexes and
// referrers of referrers), with room to spare.
const syncKeptDepth = 4

// SyncKeptManifests lists the manifests of registry that active sync of
// rule keeps current: the manifest each tag it tracks points at (tags
// with a sync_tags row of the rule that its filters did not exclude; a
// tag whose last sync failed included: the next run retries it), the
// manifests those reference (an index's children, nested), and, with
// referrers, the referrers of those (the rule syncs referrers). Size is
// not set.
func (s *db) SyncKeptManifests(ctx context.Context, registry, rule string, referrers bool) ([]ManifestKey, error) {
	edges := `SELECT repo, manifest AS parent, child FROM manifest_refs WHERE registry = $1 AND kind = 'manifest'`
	if referrers {
		edges += ` UNION ALL SELECT repo, subject, digest FROM manifests WHERE registry = $1 AND subject <> ''`
	}
	q := `WITH RECURSIVE edges(repo, parent, child) AS (` + edges + `),
	kept(repo, digest, depth) AS (
		SELECT t.repo, t.digest, 0 FROM sync_tags st JOIN tags t ON t.registry = st.registry AND t.repo = st.repo AND t.tag = st.tag
		WHERE st.registry = $1 AND st.rule = $2 AND st.state <> 'excluded'
		UNION
		SELECT e.repo, e.child, k.depth + 1 FROM kept k JOIN edges e ON e.repo = k.repo AND e.parent = k.digest WHERE k.depth < $3
	)
	SELECT DISTINCT repo, digest FROM kept ORDER BY repo, digest`
	rows, err := s.r.QueryContext(ctx, q, strings.ToLower(registry), nameKey(rule), syncKeptDepth)
	if err != nil {
		return nil, fmt.Errorf("sync-kept manifests: %w", err)
	}
	defer rows.Close()
	var out []ManifestKey
	for rows.Next() {
		var k ManifestKey
		var d string
		if err := rows.Scan(&k.Repo, &d); err != nil {
			return nil, fmt.Errorf("sync-kept manifests: %w", err)
		}
		k.Digest = digest.Digest(d)
		out = append(out, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sync-kept manifests: %w", err)
	}
	return out, nil
}
