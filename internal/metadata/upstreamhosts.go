package metadata

import (
	"context"
	"fmt"
	"strings"
)

// LoginServers lists the upstream login servers that cache rules (the host
// of their source) and credential sets name, in every registry: the hosts
// arca's configuration names explicitly (the egress policy lets these,
// and only these, be on non-public addresses).
func (s *db) LoginServers(ctx context.Context) ([]string, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT source FROM cache_rules UNION SELECT login_server FROM credential_sets`)
	if err != nil {
		return nil, fmt.Errorf("login servers: %w", err)
	}
	defer rows.Close()
	seen := map[string]bool{}
	var out []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, fmt.Errorf("login servers: %w", err)
		}
		host, _, _ := strings.Cut(v, "/")
		if host = strings.ToLower(host); host != "" && !seen[host] {
			seen[host] = true
			out = append(out, host)
		}
	}
	return out, rows.Err()
}
