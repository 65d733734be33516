package metadata

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// schemaIdentity holds user-assigned identities (principals that prove
// who they are with a federated token), their federated credentials and
// role assignments (ARM's: a role for a principal at a scope).
const schemaIdentity = `
CREATE TABLE identities (
	resource_group TEXT NOT NULL COLLATE NOCASE,
	name           TEXT NOT NULL COLLATE NOCASE,
	principal_id   TEXT NOT NULL UNIQUE,
	client_id      TEXT NOT NULL UNIQUE,
	tenant_id      TEXT NOT NULL,
	location       TEXT NOT NULL,
	tags           TEXT NOT NULL DEFAULT '{}',
	created_at     INTEGER NOT NULL,
	PRIMARY KEY (resource_group, name)
);
CREATE TABLE federated_credentials (
	resource_group TEXT NOT NULL COLLATE NOCASE,
	identity       TEXT NOT NULL COLLATE NOCASE,
	name           TEXT NOT NULL COLLATE NOCASE,
	issuer         TEXT NOT NULL,
	subject        TEXT NOT NULL,
	audiences      TEXT NOT NULL,
	created_at     INTEGER NOT NULL,
	PRIMARY KEY (resource_group, identity, name)
);
CREATE INDEX federated_credentials_issuer ON federated_credentials(issuer);
CREATE TABLE role_assignments (
	name         TEXT PRIMARY KEY COLLATE NOCASE,
	role         TEXT NOT NULL,
	principal_id TEXT NOT NULL,
	scope        TEXT NOT NULL,
	description  TEXT NOT NULL DEFAULT '',
	created_at   INTEGER NOT NULL
);
CREATE INDEX role_assignments_principal ON role_assignments(principal_id)`

// UserIdentity is a user-assigned identity (Microsoft.ManagedIdentity/
// userAssignedIdentities): one principal across every registry of the
// deployment.
type UserIdentity struct {
	ResourceGroup string
	Name          string
	PrincipalID   string
	ClientID      string
	TenantID      string
	Location      string
	Tags          map[string]string
	Created       time.Time
}

// FederatedCredential trusts tokens of Issuer whose sub is Subject and
// whose aud holds one of Audiences as the identity.
type FederatedCredential struct {
	ResourceGroup string
	Identity      string
	Name          string
	Issuer        string
	Subject       string
	Audiences     []string
	Created       time.Time
}

// RoleAssignment grants Role to PrincipalID at Scope (an ARM resource id).
type RoleAssignment struct {
	Name        string // a GUID
	Role        string
	PrincipalID string
	Scope       string
	Description string
	Created     time.Time
}

const identityColumns = `resource_group, name, principal_id, client_id, tenant_id, location, tags, created_at`

func scanIdentity(sc interface{ Scan(...any) error }) (UserIdentity, error) {
	var u UserIdentity
	var tags string
	var c int64
	err := sc.Scan(&u.ResourceGroup, &u.Name, &u.PrincipalID, &u.ClientID, &u.TenantID, &u.Location, &tags, &c)
	if errors.Is(err, sql.ErrNoRows) {
		return u, ErrNotFound
	}
	if err != nil {
		return u, fmt.Errorf("identity: %w", err)
	}
	if err := json.Unmarshal([]byte(tags), &u.Tags); err != nil {
		return u, fmt.Errorf("identity tags: %w", err)
	}
	u.Created = time.UnixMilli(c).UTC()
	return u, nil
}

// GetIdentity returns the identity rg/name (ErrNotFound if none).
func (s *SQLite) GetIdentity(ctx context.Context, rg, name string) (UserIdentity, error) {
	return scanIdentity(s.r.QueryRowContext(ctx, `SELECT `+identityColumns+` FROM identities WHERE resource_group = ? AND name = ?`, rg, name))
}

// GetIdentityByPrincipal returns the identity whose principal id is id.
func (s *SQLite) GetIdentityByPrincipal(ctx context.Context, id string) (UserIdentity, error) {
	return scanIdentity(s.r.QueryRowContext(ctx, `SELECT `+identityColumns+` FROM identities WHERE principal_id = ?`, strings.ToLower(id)))
}

// ListIdentities returns the identities of rg ("" = all), by group and name.
func (s *SQLite) ListIdentities(ctx context.Context, rg string) ([]UserIdentity, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+identityColumns+` FROM identities WHERE ? = '' OR resource_group = ? ORDER BY resource_group, name`, rg, rg)
	if err != nil {
		return nil, fmt.Errorf("list identities: %w", err)
	}
	defer rows.Close()
	out := []UserIdentity{}
	for rows.Next() {
		u, err := scanIdentity(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, u)
	}
	return out, rows.Err()
}

// PutIdentity creates an identity, or updates the location and tags of
// the existing one (its ids never change); it returns the stored identity
// and whether it was created.
func (s *SQLite) PutIdentity(ctx context.Context, u UserIdentity) (UserIdentity, bool, error) {
	tags, err := json.Marshal(u.Tags)
	if err != nil {
		return u, false, err
	}
	var created bool
	err = s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE identities SET location = ?, tags = ? WHERE resource_group = ? AND name = ?`,
			u.Location, string(tags), u.ResourceGroup, u.Name)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			created = true
			_, err = tx.ExecContext(ctx, `INSERT INTO identities(`+identityColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
				u.ResourceGroup, u.Name, strings.ToLower(u.PrincipalID), strings.ToLower(u.ClientID), u.TenantID, u.Location, string(tags), now())
		}
		return err
	})
	if err != nil {
		return u, false, fmt.Errorf("put identity: %w", err)
	}
	u, err = s.GetIdentity(ctx, u.ResourceGroup, u.Name)
	return u, created, err
}

// DeleteIdentity deletes an identity and its federated credentials
// (ErrNotFound if none). Role assignments naming its principal stay, as in
// Azure, and grant nothing: the principal no longer exists.
func (s *SQLite) DeleteIdentity(ctx context.Context, rg, name string) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM identities WHERE resource_group = ? AND name = ?`, rg, name)
		if err != nil {
			return fmt.Errorf("delete identity: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM federated_credentials WHERE resource_group = ? AND identity = ?`, rg, name); err != nil {
			return fmt.Errorf("delete federated credentials: %w", err)
		}
		return nil
	})
}

const ficColumns = `resource_group, identity, name, issuer, subject, audiences, created_at`

func scanFIC(sc interface{ Scan(...any) error }) (FederatedCredential, error) {
	var f FederatedCredential
	var aud string
	var c int64
	err := sc.Scan(&f.ResourceGroup, &f.Identity, &f.Name, &f.Issuer, &f.Subject, &aud, &c)
	if errors.Is(err, sql.ErrNoRows) {
		return f, ErrNotFound
	}
	if err != nil {
		return f, fmt.Errorf("federated credential: %w", err)
	}
	if err := json.Unmarshal([]byte(aud), &f.Audiences); err != nil {
		return f, fmt.Errorf("federated credential audiences: %w", err)
	}
	f.Created = time.UnixMilli(c).UTC()
	return f, nil
}

func queryFICs(ctx context.Context, db *sql.DB, q string, args ...any) ([]FederatedCredential, error) {
	rows, err := db.QueryContext(ctx, `SELECT `+ficColumns+` FROM federated_credentials WHERE `+q+` ORDER BY resource_group, identity, name`, args...)
	if err != nil {
		return nil, fmt.Errorf("list federated credentials: %w", err)
	}
	defer rows.Close()
	out := []FederatedCredential{}
	for rows.Next() {
		f, err := scanFIC(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	return out, rows.Err()
}

// GetFederatedCredential returns one federated credential of an identity.
func (s *SQLite) GetFederatedCredential(ctx context.Context, rg, identity, name string) (FederatedCredential, error) {
	return scanFIC(s.r.QueryRowContext(ctx, `SELECT `+ficColumns+` FROM federated_credentials WHERE resource_group = ? AND identity = ? AND name = ?`, rg, identity, name))
}

// ListFederatedCredentials returns an identity's federated credentials.
func (s *SQLite) ListFederatedCredentials(ctx context.Context, rg, identity string) ([]FederatedCredential, error) {
	return queryFICs(ctx, s.r, `resource_group = ? AND identity = ?`, rg, identity)
}

// FederatedCredentialsByIssuer returns every federated credential trusting
// issuer (compared exactly, as OIDC compares issuers).
func (s *SQLite) FederatedCredentialsByIssuer(ctx context.Context, issuer string) ([]FederatedCredential, error) {
	return queryFICs(ctx, s.r, `issuer = ?`, issuer)
}

// PutFederatedCredential creates or replaces a federated credential of an
// existing identity (ErrNotFound if the identity does not exist).
func (s *SQLite) PutFederatedCredential(ctx context.Context, f FederatedCredential) (bool, error) {
	aud, err := json.Marshal(f.Audiences)
	if err != nil {
		return false, err
	}
	var created bool
	err = s.tx(ctx, func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM identities WHERE resource_group = ? AND name = ?`, f.ResourceGroup, f.Identity).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return ErrNotFound
		}
		res, err := tx.ExecContext(ctx, `UPDATE federated_credentials SET issuer = ?, subject = ?, audiences = ? WHERE resource_group = ? AND identity = ? AND name = ?`,
			f.Issuer, f.Subject, string(aud), f.ResourceGroup, f.Identity, f.Name)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			created = true
			_, err = tx.ExecContext(ctx, `INSERT INTO federated_credentials(`+ficColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?)`,
				f.ResourceGroup, f.Identity, f.Name, f.Issuer, f.Subject, string(aud), now())
		}
		return err
	})
	if err != nil && !errors.Is(err, ErrNotFound) {
		return false, fmt.Errorf("put federated credential: %w", err)
	}
	return created, err
}

// DeleteFederatedCredential deletes one (ErrNotFound if none).
func (s *SQLite) DeleteFederatedCredential(ctx context.Context, rg, identity, name string) error {
	res, err := s.w.ExecContext(ctx, `DELETE FROM federated_credentials WHERE resource_group = ? AND identity = ? AND name = ?`, rg, identity, name)
	if err != nil {
		return fmt.Errorf("delete federated credential: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	return nil
}

const roleAssignmentColumns = `name, role, principal_id, scope, description, created_at`

func queryRoleAssignments(ctx context.Context, db *sql.DB, where string, args ...any) ([]RoleAssignment, error) {
	rows, err := db.QueryContext(ctx, `SELECT `+roleAssignmentColumns+` FROM role_assignments `+where+` ORDER BY created_at, name`, args...)
	if err != nil {
		return nil, fmt.Errorf("list role assignments: %w", err)
	}
	defer rows.Close()
	out := []RoleAssignment{}
	for rows.Next() {
		var a RoleAssignment
		var c int64
		if err := rows.Scan(&a.Name, &a.Role, &a.PrincipalID, &a.Scope, &a.Description, &c); err != nil {
			return nil, fmt.Errorf("list role assignments: %w", err)
		}
		a.Created = time.UnixMilli(c).UTC()
		out = append(out, a)
	}
	return out, rows.Err()
}

// ListRoleAssignments returns every role assignment.
func (s *SQLite) ListRoleAssignments(ctx context.Context) ([]RoleAssignment, error) {
	return queryRoleAssignments(ctx, s.r, "")
}

// RoleAssignmentsOf returns the role assignments of a principal.
func (s *SQLite) RoleAssignmentsOf(ctx context.Context, principalID string) ([]RoleAssignment, error) {
	return queryRoleAssignments(ctx, s.r, "WHERE principal_id = ?", strings.ToLower(principalID))
}

// GetRoleAssignment returns one role assignment by name.
func (s *SQLite) GetRoleAssignment(ctx context.Context, name string) (RoleAssignment, error) {
	list, err := queryRoleAssignments(ctx, s.r, "WHERE name = ?", name)
	if err != nil {
		return RoleAssignment{}, err
	}
	if len(list) == 0 {
		return RoleAssignment{}, ErrNotFound
	}
	return list[0], nil
}

// PutRoleAssignment creates a role assignment; one with the same role,
// principal and scope (ARM's RoleAssignmentExists) is returned instead,
// with created false.
func (s *SQLite) PutRoleAssignment(ctx context.Context, a RoleAssignment) (RoleAssignment, bool, error) {
	var out RoleAssignment
	var created bool
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var name string
		err := tx.QueryRowContext(ctx, `SELECT name FROM role_assignments WHERE role = ? AND principal_id = ? AND scope = ? COLLATE NOCASE`,
			a.Role, strings.ToLower(a.PrincipalID), a.Scope).Scan(&name)
		switch {
		case err == nil:
			a.Name = name
			return nil
		case !errors.Is(err, sql.ErrNoRows):
			return err
		}
		created = true
		_, err = tx.ExecContext(ctx, `INSERT INTO role_assignments(`+roleAssignmentColumns+`) VALUES (?, ?, ?, ?, ?, ?)`,
			a.Name, a.Role, strings.ToLower(a.PrincipalID), a.Scope, a.Description, now())
		return err
	})
	if err != nil {
		return out, false, fmt.Errorf("put role assignment: %w", err)
	}
	out, err = s.GetRoleAssignment(ctx, a.Name)
	return out, created, err
}

// DeleteRoleAssignment deletes one by name (ErrNotFound if none).
func (s *SQLite) DeleteRoleAssignment(ctx context.Context, name string) error {
	res, err := s.w.ExecContext(ctx, `DELETE FROM role_assignments WHERE name = ?`, name)
	if err != nil {
		return fmt.Errorf("delete role assignment: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	return nil
}
