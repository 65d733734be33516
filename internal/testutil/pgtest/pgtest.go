// Package pgtest runs a private PostgreSQL cluster (Debian's postgresql
// package) for tests: initdb and pg_ctl in a temporary directory, on a free
// loopback port, as an unprivileged user when the tests run as root. One
// cluster serves a test binary (Main stops it); each test gets a database
// of its own.
package pgtest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"

	"github.com/arcacache/arca/internal/testutil/freeport"
)

// BinDir holds Debian's PostgreSQL 15 server binaries.
const BinDir = "/usr/lib/postgresql/15/bin"

// Cluster is a running private cluster.
type Cluster struct {
	dir  string
	port int
	as   []string // command prefix to run as the cluster's owner
}

var (
	mu      sync.Mutex
	shared  *Cluster
	started error
	dbSeq   atomic.Int64
)

// Main runs the tests and stops the shared cluster: call it from TestMain
// (or defer Stop there).
func Main(m *testing.M) int {
	defer Stop()
	return m.Run()
}

// Stop stops the shared cluster, if one was started, and removes it.
func Stop() {
	mu.Lock()
	defer mu.Unlock()
	if shared != nil {
		if err := shared.stop(); err != nil {
			fmt.Fprintln(os.Stderr, "pgtest:", err)
		}
		shared = nil
	}
}

// Available reports whether the PostgreSQL binaries are installed.
func Available() bool {
	_, err := os.Stat(filepath.Join(BinDir, "initdb"))
	return err == nil
}

// SkipIfMissing skips tb when the binaries are missing, unless
// ARCA_REQUIRE_TOOLS is set (the test command sets it), then it fails.
func SkipIfMissing(tb testing.TB) {
	tb.Helper()
	if Available() {
		return
	}
	msg := "PostgreSQL not installed (" + BinDir + "/initdb missing): apt-get install postgresql"
	if os.Getenv("ARCA_REQUIRE_TOOLS") != "" {
		tb.Fatal(msg + " (ARCA_REQUIRE_TOOLS is set)")
	}
	tb.Skip(msg)
}

// NewDatabase creates an empty database on the shared cluster (starting it
// on first use) and returns its URL. The database is dropped at cleanup.
func NewDatabase(tb testing.TB) string {
	tb.Helper()
	SkipIfMissing(tb)
	c, err := sharedCluster()
	if err != nil {
		tb.Fatal(err)
	}
	name := fmt.Sprintf("t%d_%d", os.Getpid(), dbSeq.Add(1))
	if err := c.exec("CREATE DATABASE " + name); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = c.exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)") })
	return c.URL(name)
}

// PasswordUser is the role that needs a password (see NewPasswordDatabase).
const PasswordUser = "arca_pw"

// NewPasswordDatabase creates a database owned by PasswordUser, which
// logs in only with password, and returns its URL (without the password)
// and the password.
func NewPasswordDatabase(tb testing.TB) (url, password string) {
	tb.Helper()
	SkipIfMissing(tb)
	c, err := sharedCluster()
	if err != nil {
		tb.Fatal(err)
	}
	password = "pw-" + strconv.FormatInt(dbSeq.Add(1), 10) + "-" + strconv.Itoa(os.Getpid()) + "-s3cr3t"
	// The role is shared by the cluster's tests; each sets its password.
	if err := c.exec("DO $$BEGIN CREATE ROLE " + PasswordUser + " LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END$$"); err != nil {
		tb.Fatal(err)
	}
	if err := c.exec("ALTER ROLE " + PasswordUser + " PASSWORD '" + password + "'"); err != nil {
		tb.Fatal(err)
	}
	name := fmt.Sprintf("t%d_%d", os.Getpid(), dbSeq.Add(1))
	if err := c.exec("CREATE DATABASE " + name + " OWNER " + PasswordUser); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = c.exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)") })
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", PasswordUser, c.port, name), password
}

// Statements returns how many statements (BEGIN and COMMIT included) the
// server has run in the database of url: the round trips its clients
// made. Take differences.
func Statements(tb testing.TB, url string) int64 {
	tb.Helper()
	db, err := sql.Open("pgx", url)
	if err != nil {
		tb.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	if _, err := db.ExecContext(ctx, `CREATE EXTENSION IF NOT EXISTS pg_stat_statements`); err != nil {
		tb.Fatal(err)
	}
	var n int64
	err = db.QueryRowContext(ctx, `SELECT COALESCE(SUM(calls), 0)::BIGINT FROM pg_stat_statements
		WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) AND query NOT LIKE '%pg_stat_statements%'`).Scan(&n)
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

// URL is the libpq URL of database name on c.
func (c *Cluster) URL(name string) string {
	return fmt.Sprintf("postgres://arca@127.0.0.1:%d/%s?sslmode=disable", c.port, name)
}

func sharedCluster() (*Cluster, error) {
	mu.Lock()
	defer mu.Unlock()
	if shared == nil && started == nil {
		shared, started = start()
	}
	return shared, started
}

func start() (*Cluster, error) {
	dir, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	c := &Cluster{dir: dir}
	if os.Geteuid() == 0 {
		// initdb refuses to run as root.
		u, err := user.Lookup("nobody")
		if err != nil {
			return nil, fmt.Errorf("pgtest: running as root and no user nobody: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			return nil, fmt.Errorf("pgtest: %w", err)
		}
		c.as = []string{"runuser", "-u", "nobody", "--"}
	}
	data := filepath.Join(dir, "data")
	if err := c.run(filepath.Join(BinDir, "initdb"), "-D", data, "-U", "arca", "--auth=trust", "-E", "UTF8", "--no-sync"); err != nil {
		return nil, err
	}
	// Role PasswordUser must authenticate with a password (scram), so that
	// tests can check passwords reach the server and nothing else; every
	// other role is trusted. The first matching pg_hba line wins.
	hba := filepath.Join(data, "pg_hba.conf")
	conf, err := os.ReadFile(hba)
	if err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	conf = append([]byte("host all "+PasswordUser+" 127.0.0.1/32 scram-sha-256\n"), conf...)
	if err := os.WriteFile(hba, conf, 0o600); err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	// PostgreSQL cannot listen on port 0: a port taken before the
	// postmaster binds it makes it exit, and it starts again on another.
	_, err = freeport.Retry(func(addr string) error {
		_, port, _ := net.SplitHostPort(addr)
		c.port, _ = strconv.Atoi(port)
		logFile := filepath.Join(dir, "log")
		_ = os.Remove(logFile) // pg_ctl appends; one attempt's log each
		opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200 -c shared_preload_libraries=pg_stat_statements", c.port, dir)
		if err := c.run(filepath.Join(BinDir, "pg_ctl"), "start", "-w", "-D", data, "-l", logFile, "-o", opts); err != nil {
			log, _ := os.ReadFile(logFile)
			if freeport.InUse(string(log)) {
				return fmt.Errorf("pgtest: port %d: %w", c.port, freeport.ErrInUse)
			}
			return fmt.Errorf("%w\n%s", err, log)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Cluster) stop() error {
	err := c.run(filepath.Join(BinDir, "pg_ctl"), "stop", "-D", filepath.Join(c.dir, "data"), "-m", "immediate", "-w")
	return errors.Join(err, os.RemoveAll(c.dir))
}

func (c *Cluster) run(name string, args ...string) error {
	argv := append(append(append([]string{}, c.as...), name), args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = c.dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("pgtest: %s: %w\n%s", filepath.Base(name), err, out)
	}
	return nil
}

func (c *Cluster) exec(stmt string) error {
	db, err := sql.Open("pgx", c.URL("postgres"))
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := db.ExecContext(context.Background(), stmt); err != nil {
		return fmt.Errorf("pgtest: %s: %w", stmt, err)
	}
	return nil
}
