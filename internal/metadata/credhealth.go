package metadata

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/arcacache/arca/internal/rules"
)

// SetCredentialSetHealth stores h as the health of credential set
// checked.Name, if the set still has checked's login server and secret
// references (a write since the check has its own, newer result). It
// reports whether it stored h. Health does not change what the data plane
// serves, so the rules generation stays.
func (s *SQLite) SetCredentialSetHealth(ctx context.Context, registry string, checked rules.CredentialSet, h rules.Health) (bool, error) {
	var stored bool
	err := s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE credential_sets SET health_status = ?, health_code = ?, health_message = ?
			WHERE registry = ? AND name = ? AND login_server = ? AND username_ref = ? AND password_ref = ?`,
			h.Status, h.ErrorCode, h.ErrorMessage, strings.ToLower(registry), checked.Name,
			checked.LoginServer, checked.UsernameRef, checked.PasswordRef)
		if err != nil {
			return fmt.Errorf("set credential set health: %w", err)
		}
		n, err := res.RowsAffected()
		stored = n > 0
		return err
	})
	return stored, err
}
