package metadata

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// schemaFetchLeases holds one lease per upstream blob fetch in progress
// somewhere in the cluster, so that a blob wanted on several replicas at
// once is fetched from its upstream by one of them; the others follow the
// holder over its advertised internal address.
var schemaFetchLeases = []string{
	`CREATE TABLE fetch_leases (
	fetch_key  TEXT PRIMARY KEY,
	holder     TEXT NOT NULL,
	addr       TEXT NOT NULL,
	expires_at BIGINT NOT NULL
)`,
}

// schemaFetchLeaseOutcome lets a lease outlive its fetch briefly with how
// the fetch ended (SettleFetchLease), for the replicas that waited for it.
var schemaFetchLeaseOutcome = []string{
	`ALTER TABLE fetch_leases ADD COLUMN outcome TEXT NOT NULL DEFAULT ''`,
}

// FetchLease is who fetches a blob from its upstream: the holder (a
// replica's id), the internal address it serves followers on ("" when it
// advertises none) and when the lease lapses unless renewed. Outcome is ""
// while the fetch runs; a settled lease (SettleFetchLease) has the
// holder's word for how its fetch ended, until Expires.
type FetchLease struct {
	Holder  string
	Addr    string
	Expires time.Time
	Outcome string
}

// AcquireFetchLease takes the lease on key for holder until now+ttl, or
// renews it when holder has it already. When another holder's lease has
// not lapsed it reports false and returns that lease. Expiry compares this
// replica's clock with the holder's (as sync leases do): keep clocks in
// sync and ttl well above their skew.
func (s *db) AcquireFetchLease(ctx context.Context, key, holder, addr string, ttl time.Duration) (FetchLease, bool, error) {
	t := time.Now()
	var cur FetchLease
	var got bool
	err := s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO fetch_leases(fetch_key, holder, addr, expires_at, outcome) VALUES ($1, $2, $3, $4, '')
			ON CONFLICT(fetch_key) DO UPDATE SET holder = excluded.holder, addr = excluded.addr, expires_at = excluded.expires_at, outcome = ''
			WHERE fetch_leases.expires_at < $5 OR fetch_leases.holder = excluded.holder`,
			key, holder, addr, t.Add(ttl).UnixMicro(), t.UnixMicro())
		if err != nil {
			return fmt.Errorf("fetch lease: %w", err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return fmt.Errorf("fetch lease: %w", err)
		}
		if got = n > 0; got {
			cur = FetchLease{Holder: holder, Addr: addr, Expires: t.Add(ttl)}
			return nil
		}
		var exp int64
		err = tx.QueryRowContext(ctx, `SELECT holder, addr, expires_at, outcome FROM fetch_leases WHERE fetch_key = $1`, key).Scan(&cur.Holder, &cur.Addr, &exp, &cur.Outcome)
		if errors.Is(err, sql.ErrNoRows) {
			// Released between the two statements: the caller tries again.
			return nil
		}
		if err != nil {
			return fmt.Errorf("fetch lease: %w", err)
		}
		cur.Expires = fromMicros(exp)
		return nil
	})
	return cur, got, err
}

// ReleaseFetchLease gives the lease on key up, if holder still holds it.
func (s *db) ReleaseFetchLease(ctx context.Context, key, holder string) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM fetch_leases WHERE fetch_key = $1 AND holder = $2`, key, holder); err != nil {
			return fmt.Errorf("release fetch lease: %w", err)
		}
		return nil
	})
}

// SettleFetchLease ends holder's fetch under the lease on key with
// outcome, which the lease keeps for ttl: until then AcquireFetchLease
// shows it to the others (not acquired, Outcome set, no address), and then
// it lapses as any lease. It does nothing when holder no longer holds the
// lease.
func (s *db) SettleFetchLease(ctx context.Context, key, holder, outcome string, ttl time.Duration) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `UPDATE fetch_leases SET outcome = $3, addr = '', expires_at = $4 WHERE fetch_key = $1 AND holder = $2`,
			key, holder, outcome, time.Now().Add(ttl).UnixMicro()); err != nil {
			return fmt.Errorf("settle fetch lease: %w", err)
		}
		return nil
	})
}
