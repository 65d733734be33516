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

// identitySchema holds user-assigned identities (principals that prove
// who they are with a federated token), their federated credentials and
// role assignments (ARM's: a role for a principal at a scope). Names are
// unique ignoring case through *_key columns; c is the collation of
// ordered keys (PostgreSQL: "C", byte order as SQLite).
func identitySchema(c string) []string {
	return []string{
		`CREATE TABLE identities (
	rg_key         TEXT` + c + ` NOT NULL,
	name_key       TEXT` + c + ` NOT NULL,
	resource_group TEXT NOT NULL,
	name           TEXT NOT NULL,
	principal_id   TEXT NOT NULL UNIQUE,
	client_id      TEXT NOT NULL UNIQUE,
	tenant_id      TEXT NOT NULL,
	location       TEXT NOT NULL,
	tags           TEXT NOT NULL DEFAULT '{}',
	created_at     BIGINT NOT NULL,
	PRIMARY KEY (rg_key, name_key)
)`,
		`CREATE TABLE federated_credentials (
	rg_key       TEXT` + c + ` NOT NULL,
	identity_key TEXT` + c + ` NOT NULL,
	name_key     TEXT` + c + ` NOT NULL,
	name         TEXT NOT NULL,
	issuer       TEXT NOT NULL,
	subject      TEXT NOT NULL,
	audiences    TEXT NOT NULL,
	created_at   BIGINT NOT NULL,
	PRIMARY KEY (rg_key, identity_key, name_key)
)`,
		`CREATE INDEX federated_credentials_issuer ON federated_credentials(issuer)`,
		`CREATE TABLE role_assignments (
	name         TEXT` + c + ` PRIMARY KEY,
	role         TEXT NOT NULL,
	principal_id TEXT NOT NULL,
	scope        TEXT NOT NULL,
	scope_key    TEXT NOT NULL,
	description  TEXT NOT NULL DEFAULT '',
	created_at   BIGINT NOT NULL
)`,
		`CREATE INDEX role_assignments_principal ON role_assignments(principal_id)`,
	}
}

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
	// SecretHash is the argon2id hash of the identity's client secret ("" =
	// none): with its client id it logs in as the identity.
	SecretHash    string
	SecretCreated time.Time
	// SecretExpires is when the secret stops working (zero: never; secrets
	// set before expiry was recorded).
	SecretExpires time.Time
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
	// Condition is an ABAC condition (ConditionVersion 2.0) limiting the
	// grant; "" = none.
	Condition        string
	ConditionVersion string
	Created          time.Time
}

const identityColumns = `resource_group, name, principal_id, client_id, tenant_id, location, tags, created_at`
const identityInsertColumns = `rg_key, name_key, ` + identityColumns

// identitySelect is what scanIdentity reads.
const identitySelect = identityColumns + `, secret_hash, secret_created, secret_expires`

func scanIdentity(sc scanner) (UserIdentity, error) {
	var u UserIdentity
	var tags string
	var c, sc2, se int64
	if err := rowError(sc.Scan(&u.ResourceGroup, &u.Name, &u.PrincipalID, &u.ClientID, &u.TenantID, &u.Location, &tags, &c,
		&u.SecretHash, &sc2, &se), "identity"); err != nil {
		return u, err
	}
	u.Created = fromMicros(c)
	if sc2 != 0 {
		u.SecretCreated = fromMicros(sc2)
	}
	if se != 0 {
		u.SecretExpires = fromMicros(se)
	}
	return u, jsonColumn(tags, &u.Tags, "identity tags")
}

// GetIdentity returns the identity rg/name (ErrNotFound if none).
func (s *db) GetIdentity(ctx context.Context, rg, name string) (UserIdentity, error) {
	return scanIdentity(s.r.QueryRowContext(ctx, `SELECT `+identitySelect+` FROM identities WHERE rg_key = $1 AND name_key = $2`, nameKey(rg), nameKey(name)))
}

// GetIdentityByPrincipal returns the identity whose principal id is id.
func (s *db) GetIdentityByPrincipal(ctx context.Context, id string) (UserIdentity, error) {
	return scanIdentity(s.r.QueryRowContext(ctx, `SELECT `+identitySelect+` FROM identities WHERE principal_id = $1`, strings.ToLower(id)))
}

// ListIdentities returns the identities of rg ("" = all), by group and name.
func (s *db) ListIdentities(ctx context.Context, rg string) ([]UserIdentity, error) {
	return queryRows(ctx, s.r, "list identities", scanIdentity,
		`SELECT `+identitySelect+` FROM identities WHERE $1 = '' OR rg_key = $1 ORDER BY rg_key, name_key`, nameKey(rg))
}

// PutIdentity creates an identity, or updates the location and tags of
// the existing one (its ids never change); it returns the stored identity
// and whether it was created.
func (s *db) PutIdentity(ctx context.Context, u UserIdentity) (UserIdentity, bool, error) {
	tags, err := json.Marshal(u.Tags)
	if err != nil {
		return u, false, err
	}
	var created bool
	err = s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE identities SET location = $1, tags = $2 WHERE rg_key = $3 AND name_key = $4`,
			u.Location, string(tags), nameKey(u.ResourceGroup), nameKey(u.Name))
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			created = true
			_, err = tx.ExecContext(ctx, `INSERT INTO identities(`+identityInsertColumns+`) VALUES (`+placeholders(1, 10)+`)`,
				nameKey(u.ResourceGroup), nameKey(u.Name), u.ResourceGroup, u.Name, strings.ToLower(u.PrincipalID), strings.ToLower(u.ClientID), u.TenantID, u.Location, string(tags), now())
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
func (s *db) DeleteIdentity(ctx context.Context, rg, name string) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM identities WHERE rg_key = $1 AND name_key = $2`, nameKey(rg), nameKey(name))
		if err != nil {
			return fmt.Errorf("delete identity: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM federated_credentials WHERE rg_key = $1 AND identity_key = $2`, nameKey(rg), nameKey(name)); err != nil {
			return fmt.Errorf("delete federated credentials: %w", err)
		}
		return nil
	})
}

const ficColumns = `i.resource_group, i.name, f.name, f.issuer, f.subject, f.audiences, f.created_at`
const ficFrom = ` FROM federated_credentials f JOIN identities i ON i.rg_key = f.rg_key AND i.name_key = f.identity_key`

func scanFIC(sc scanner) (FederatedCredential, error) {
	var f FederatedCredential
	var aud string
	var c int64
	if err := rowError(sc.Scan(&f.ResourceGroup, &f.Identity, &f.Name, &f.Issuer, &f.Subject, &aud, &c), "federated credential"); err != nil {
		return f, err
	}
	f.Created = fromMicros(c)
	return f, jsonColumn(aud, &f.Audiences, "federated credential audiences")
}

func queryFICs(ctx context.Context, q1 *sql.DB, q string, args ...any) ([]FederatedCredential, error) {
	return queryRows(ctx, q1, "list federated credentials", scanFIC,
		`SELECT `+ficColumns+ficFrom+` WHERE `+q+` ORDER BY f.rg_key, f.identity_key, f.name_key`, args...)
}

// GetFederatedCredential returns one federated credential of an identity.
func (s *db) GetFederatedCredential(ctx context.Context, rg, identity, name string) (FederatedCredential, error) {
	return scanFIC(s.r.QueryRowContext(ctx, `SELECT `+ficColumns+ficFrom+` WHERE f.rg_key = $1 AND f.identity_key = $2 AND f.name_key = $3`, nameKey(rg), nameKey(identity), nameKey(name)))
}

// ListFederatedCredentials returns an identity's federated credentials.
func (s *db) ListFederatedCredentials(ctx context.Context, rg, identity string) ([]FederatedCredential, error) {
	return queryFICs(ctx, s.r, `f.rg_key = $1 AND f.identity_key = $2`, nameKey(rg), nameKey(identity))
}

// FederatedCredentialsByIssuer returns every federated credential trusting
// issuer (compared exactly, as OIDC compares issuers).
func (s *db) FederatedCredentialsByIssuer(ctx context.Context, issuer string) ([]FederatedCredential, error) {
	return queryFICs(ctx, s.r, `f.issuer = $1`, issuer)
}

// PutFederatedCredential creates or replaces a federated credential of an
// existing identity (ErrNotFound if the identity does not exist).
func (s *db) PutFederatedCredential(ctx context.Context, f FederatedCredential) (bool, error) {
	aud, err := json.Marshal(f.Audiences)
	if err != nil {
		return false, err
	}
	var created bool
	err = s.tx(ctx, func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM identities WHERE rg_key = $1 AND name_key = $2`, nameKey(f.ResourceGroup), nameKey(f.Identity)).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return ErrNotFound
		}
		res, err := tx.ExecContext(ctx, `UPDATE federated_credentials SET issuer = $1, subject = $2, audiences = $3 WHERE rg_key = $4 AND identity_key = $5 AND name_key = $6`,
			f.Issuer, f.Subject, string(aud), nameKey(f.ResourceGroup), nameKey(f.Identity), nameKey(f.Name))
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			created = true
			_, err = tx.ExecContext(ctx, `INSERT INTO federated_credentials(rg_key, identity_key, name_key, name, issuer, subject, audiences, created_at) VALUES (`+placeholders(1, 8)+`)`,
				nameKey(f.ResourceGroup), nameKey(f.Identity), nameKey(f.Name), f.Name, f.Issuer, f.Subject, string(aud), now())
		}
		return err
	})
	if err != nil && !errors.Is(err, ErrNotFound) {
		return false, fmt.Errorf("put federated credential: %w", err)
	}
	return created, err
}

// DeleteFederatedCredential deletes one (ErrNotFound if none).
func (s *db) DeleteFederatedCredential(ctx context.Context, rg, identity, name string) error {
	res, err := s.w.ExecContext(ctx, `DELETE FROM federated_credentials WHERE rg_key = $1 AND identity_key = $2 AND name_key = $3`, nameKey(rg), nameKey(identity), nameKey(name))
	if err != nil {
		return fmt.Errorf("delete federated credential: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	return nil
}

const roleAssignmentColumns = `name, role, principal_id, scope, description, created_at, condition, condition_version`

func queryRoleAssignments(ctx context.Context, q1 *sql.DB, where string, args ...any) ([]RoleAssignment, error) {
	return queryRows(ctx, q1, "list role assignments", func(sc scanner) (RoleAssignment, error) {
		var a RoleAssignment
		var c int64
		if err := sc.Scan(&a.Name, &a.Role, &a.PrincipalID, &a.Scope, &a.Description, &c, &a.Condition, &a.ConditionVersion); err != nil {
			return a, fmt.Errorf("list role assignments: %w", err)
		}
		a.Created = fromMicros(c)
		return a, nil
	}, `SELECT `+roleAssignmentColumns+` FROM role_assignments `+where+` ORDER BY created_at, name`, args...)
}

// ListRoleAssignments returns every role assignment.
func (s *db) ListRoleAssignments(ctx context.Context) ([]RoleAssignment, error) {
	return queryRoleAssignments(ctx, s.r, "")
}

// RoleAssignmentsOf returns the role assignments of a principal.
func (s *db) RoleAssignmentsOf(ctx context.Context, principalID string) ([]RoleAssignment, error) {
	return queryRoleAssignments(ctx, s.r, "WHERE principal_id = $1", strings.ToLower(principalID))
}

// GetRoleAssignment returns one role assignment by name.
func (s *db) GetRoleAssignment(ctx context.Context, name string) (RoleAssignment, error) {
	list, err := queryRoleAssignments(ctx, s.r, "WHERE name = $1", strings.ToLower(name))
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
func (s *db) PutRoleAssignment(ctx context.Context, a RoleAssignment) (RoleAssignment, bool, error) {
	var out RoleAssignment
	var created bool
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var name string
		err := tx.QueryRowContext(ctx, `SELECT name FROM role_assignments WHERE role = $1 AND principal_id = $2 AND scope_key = $3`,
			a.Role, strings.ToLower(a.PrincipalID), strings.ToLower(a.Scope)).Scan(&name)
		switch {
		case err == nil:
			a.Name = name
			return nil
		case !errors.Is(err, sql.ErrNoRows):
			return err
		}
		created = true
		_, err = tx.ExecContext(ctx, `INSERT INTO role_assignments(name, role, principal_id, scope, scope_key, description, created_at,
			condition, condition_version) VALUES (`+placeholders(1, 9)+`)`,
			strings.ToLower(a.Name), a.Role, strings.ToLower(a.PrincipalID), a.Scope, strings.ToLower(a.Scope), a.Description, now(),
			a.Condition, a.ConditionVersion)
		return err
	})
	if err != nil {
		return out, false, fmt.Errorf("put role assignment: %w", err)
	}
	out, err = s.GetRoleAssignment(ctx, a.Name)
	return out, created, err
}

// DeleteRoleAssignment deletes one by name (ErrNotFound if none).
func (s *db) DeleteRoleAssignment(ctx context.Context, name string) error {
	res, err := s.w.ExecContext(ctx, `DELETE FROM role_assignments WHERE name = $1`, strings.ToLower(name))
	if err != nil {
		return fmt.Errorf("delete role assignment: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	return nil
}

// GetIdentityByClientID returns the identity whose client id is id.
func (s *db) GetIdentityByClientID(ctx context.Context, id string) (UserIdentity, error) {
	return scanIdentity(s.r.QueryRowContext(ctx, `SELECT `+identitySelect+` FROM identities WHERE client_id = $1`, strings.ToLower(id)))
}

// SetIdentitySecret replaces the client secret hash of identity rg/name,
// created at and expiring at expires (zero: never); ErrNotFound if there
// is no such identity. "" removes the secret.
func (s *db) SetIdentitySecret(ctx context.Context, rg, name, hash string, at, expires time.Time) error {
	created, ends := int64(0), int64(0)
	if hash != "" {
		created, ends = micros(at), micros(expires)
	}
	res, err := s.w.ExecContext(ctx, `UPDATE identities SET secret_hash = $1, secret_created = $2, secret_expires = $3 WHERE rg_key = $4 AND name_key = $5`,
		hash, created, ends, nameKey(rg), nameKey(name))
	if err != nil {
		return fmt.Errorf("set identity secret: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	return nil
}

// schemaIdentitySecretExpiry records when a client secret expires;
// secrets set before it have none (0) and keep working until reset.
var schemaIdentitySecretExpiry = []string{
	`ALTER TABLE identities ADD COLUMN secret_expires BIGINT NOT NULL DEFAULT 0`,
}
