package metadata

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/opencontainers/go-digest"
)

// copyTable is a table Copy carries over: its columns, the first key
// columns its primary key.
type copyTable struct {
	name string
	cols []string
	keys int
	// identity: the key is generated on insert; after a copy the
	// destination's generator must continue past the copied keys.
	identity bool
}

// copyTables are copied in this order (blobs before the links that
// reference them). Every table is either here or in copySkipped
// (TestCopyCoversEveryTable checks).
var copyTables = []copyTable{
	{"registries", []string{"name", "hosts", "created_at", "admin_enabled", "anonymous_pull", "admin_password1", "admin_password2",
		"sku", "tags", "public_network_access", "data_endpoint_enabled", "role_assignment_mode", "managed", "cache_quota", "storage_quota"}, 1, false},
	{"repositories", []string{"registry", "name", "created_at", "pushed"}, 2, false},
	{"blobs", []string{"digest", "size", "created_at"}, 1, false},
	{"repo_blobs", []string{"registry", "repo", "digest", "pulled_at"}, 3, false},
	{"manifests", []string{"registry", "repo", "digest", "media_type", "size", "artifact_type", "subject", "annotations", "created_at", "pulled_at",
		"config_media_type", "architecture", "os", "image_size", "platform_refs", "signature", "described", "variant", "os_version"}, 3, false},
	{"manifest_refs", []string{"registry", "repo", "manifest", "child", "kind"}, 4, false},
	{"tags", []string{"registry", "repo", "tag", "digest", "updated_at", "checked_at", "pulled_at"}, 3, false},
	{"cache_rules", []string{"registry", "name_key", "name", "source", "target", "credential_set", "identity", "sync_mode",
		"sync_referrers", "filters", "sync_status", "provisioning_state", "created_at", "modified_at", "retention_days"}, 2, false},
	{"credential_sets", []string{"registry", "name_key", "name", "login_server", "username_ref", "password_ref", "health_status",
		"health_code", "health_message", "principal_id", "provisioning_state", "created_at", "modified_at", "identity"}, 2, false},
	{"rules_generation", []string{"registry", "generation"}, 1, false},
	{"operations", []string{"id", "registry", "resource", "status", "error_code", "error_msg", "started_at", "ended_at", "updated_at", "properties"}, 1, false},
	{"sync_runs", []string{"registry", "rule", "run_id", "result", "started_at", "ended_at", "next_at", "tags_synced",
		"tags_unchanged", "tags_excluded", "tags_failed", "bytes_fetched", "error", "config_hash"}, 2, false},
	{"sync_tags", []string{"registry", "rule", "repo", "tag", "digest", "state", "error", "config_hash", "updated_at"}, 4, false},
	{"upstream_ratelimits", []string{"source", "lim", "remaining", "window_ms", "observed_at"}, 1, false},
	{"scope_maps", []string{"registry", "name_key", "name", "description", "actions", "created_at", "modified_at"}, 2, false},
	{"tokens", []string{"registry", "name_key", "name", "scope_map", "status", "passwords", "created_at", "modified_at"}, 2, false},
	{"signing_keys", []string{"kid", "secret", "created_at"}, 1, false},
	{"refresh_tokens", []string{"hash", "registry", "kind", "subject", "stamp", "created_at", "expires_at", "revoked"}, 1, false},
	{"principals", []string{"name_key", "name", "role", "registry", "salt", "hash", "created_at"}, 1, false},
	{"audit_log", []string{"id", "at", "who", "action", "resource", "result", "remote"}, 1, true},
	{"rule_stats", []string{"bucket", "registry", "rule", "name", "value"}, 4, false},
	{"identities", []string{"rg_key", "name_key", "resource_group", "name", "principal_id", "client_id", "tenant_id", "location", "tags", "created_at",
		"secret_hash", "secret_created", "secret_expires"}, 2, false},
	{"federated_credentials", []string{"rg_key", "identity_key", "name_key", "name", "issuer", "subject", "audiences", "created_at"}, 3, false},
	{"role_assignments", []string{"name", "role", "principal_id", "scope", "scope_key", "description", "created_at", "condition", "condition_version"}, 1, false},
	{"retention_policies", []string{"registry", "status", "days", "updated_at"}, 1, false},
}

// copySkipped are not copied: the migration bookkeeping (each store has its
// own), uploads in progress (their bytes are staged where they were
// sent) and sync and fetch leases (held by running processes of the
// source) and the portal's browser sessions (they sign in again), 429
// hold-backs and failed-login counts (seconds to a minute of runtime
// state).
var copySkipped = []string{"schema_migrations", "uploads", "sync_leases", "fetch_leases", "portal_sessions", "upstream_holds", "login_failures"}

// CopyProgress is told each table's rows as they are copied.
type CopyProgress func(table string, rows int64)

// Copy copies every record of from into to, both migrated to this
// binary's schema. Rows are upserted by primary key in batches, one
// transaction each, so an interrupted copy is resumed by running it again;
// a row deleted in from after it was copied stays in to, so make the last
// run with the source's server stopped.
func Copy(ctx context.Context, from, to Store, progress CopyProgress) error {
	src, ok1 := from.(*db)
	dst, ok2 := to.(*db)
	if !ok1 || !ok2 {
		return errors.New("metadata copy: unknown store implementation")
	}
	for _, t := range copyTables {
		if err := copyRows(ctx, src, dst, t, progress); err != nil {
			return fmt.Errorf("metadata copy %s: %w", t.name, err)
		}
		if t.identity {
			if err := dst.d.resumeIdentity(ctx, dst.w, t.name, t.cols[0]); err != nil {
				return fmt.Errorf("metadata copy %s: %w", t.name, err)
			}
		}
	}
	return nil
}

// CountCopyRows is how many rows Copy would copy from from now: the
// total a progress display counts towards.
func CountCopyRows(ctx context.Context, from Store) (int64, error) {
	src, ok := from.(*db)
	if !ok {
		return 0, errors.New("metadata copy: unknown store implementation")
	}
	var total int64
	for _, t := range copyTables {
		var n int64
		if err := src.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM `+t.name).Scan(&n); err != nil {
			return 0, fmt.Errorf("metadata copy: count %s: %w", t.name, err)
		}
		total += n
	}
	return total, nil
}

const copyBatch = 500

func copyRows(ctx context.Context, src, dst *db, t copyTable, progress CopyProgress) error {
	cols := strings.Join(t.cols, ", ")
	keys := strings.Join(t.cols[:t.keys], ", ")
	upsert := `INSERT INTO ` + t.name + `(` + cols + `) VALUES (` + placeholders(1, len(t.cols)) + `) ON CONFLICT(` + keys + `) DO `
	if len(t.cols) == t.keys {
		upsert += `NOTHING`
	} else {
		var set []string
		for _, c := range t.cols[t.keys:] {
			set = append(set, c+" = excluded."+c)
		}
		upsert += `UPDATE SET ` + strings.Join(set, ", ")
	}
	rows, err := src.r.QueryContext(ctx, `SELECT `+cols+` FROM `+t.name+` ORDER BY `+keys)
	if err != nil {
		return err
	}
	defer rows.Close()
	var batch [][]any
	var n int64
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := dst.tx(ctx, func(tx *sql.Tx) error {
			st, err := tx.PrepareContext(ctx, upsert)
			if err != nil {
				return err
			}
			defer st.Close()
			for _, row := range batch {
				if _, err := st.ExecContext(ctx, row...); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		n += int64(len(batch))
		batch = batch[:0]
		if progress != nil {
			progress(t.name, n)
		}
		return nil
	}
	for rows.Next() {
		row := make([]any, len(t.cols))
		ptrs := make([]any, len(t.cols))
		for i := range row {
			ptrs[i] = &row[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return err
		}
		batch = append(batch, row)
		if len(batch) == copyBatch {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if err := flush(); err != nil {
		return err
	}
	if progress != nil && n == 0 {
		progress(t.name, 0)
	}
	return nil
}

// ListBlobs returns up to n blobs (n <= 0: all) the store records, in
// digest order after `after`, and whether more follow: what a blob copy
// or a garbage collection walks.
func (s *db) ListBlobs(ctx context.Context, after digest.Digest, n int) ([]BlobRef, bool, error) {
	q, args := limit(`SELECT digest, size FROM blobs WHERE digest > $1 ORDER BY digest`, 2, n, []any{after.String()})
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, false, fmt.Errorf("list blobs: %w", err)
	}
	defer rows.Close()
	var out []BlobRef
	for rows.Next() {
		var b BlobRef
		var d string
		if err := rows.Scan(&d, &b.Size); err != nil {
			return nil, false, fmt.Errorf("list blobs: %w", err)
		}
		b.Digest = digest.Digest(d)
		out = append(out, b)
	}
	if err := rows.Err(); err != nil {
		return nil, false, fmt.Errorf("list blobs: %w", err)
	}
	if n > 0 && len(out) > n {
		return out[:n], true, nil
	}
	return out, false, nil
}
