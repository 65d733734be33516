package metadata

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/arcacache/arca/internal/rules"
)

// SetCredentialSetHealth stores h as the health of credential set
// checked.Name, if the set still has checked's login server, secret
// references and identity (a write since the check has its own, newer result). It
// reports whether it stored h. Health does not change what the data plane
// serves, so the rules generation stays.
func (s *db) SetCredentialSetHealth(ctx context.Context, registry string, checked rules.CredentialSet, h rules.Health) (bool, error) {
	var stored bool
	err := s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE credential_sets SET health_status = $1, health_code = $2, health_message = $3
			WHERE registry = $4 AND name_key = $5 AND login_server = $6 AND username_ref = $7 AND password_ref = $8
				AND identity = $9`,
			h.Status, h.ErrorCode, h.ErrorMessage, strings.ToLower(registry), nameKey(checked.Name),
			checked.LoginServer, checked.UsernameRef, checked.PasswordRef, checked.Identity)
		if err != nil {
			return fmt.Errorf("set credential set health: %w", err)
		}
		n, err := res.RowsAffected()
		stored = n > 0
		return err
	})
	return stored, err
}
