package e2e

import (
	"context"
	"database/sql"
	"io"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/arcacache/arca/internal/testutil/upstreamreg"
)

func readyz(a *arca) (int, string) {
	resp, err := httpc.Get(a.URL() + "/readyz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestClusterReadyz: a replica's /readyz fails while it cannot reach
// PostgreSQL (connections refused), is ready again when it can, and fails
// when S3 is gone.
func TestClusterReadyz(t *testing.T) {
	c := startCluster(t, 1, false)
	a := c.nodes[0]
	name := queryString(c.sql(t), `SELECT current_database()`)
	// Another database of the cluster: one cannot lock oneself out.
	u, err := url.Parse(c.db)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/postgres"
	admin, err := sql.Open("pgx", u.String())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	exec := func(q string) {
		t.Helper()
		if _, err := admin.ExecContext(context.Background(), q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	exec(`ALTER DATABASE ` + name + ` ALLOW_CONNECTIONS false`)
	exec(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '` + name + `'`)
	waitFor(t, 10*time.Second, "readyz fails without PostgreSQL", func() bool {
		s, body := readyz(a)
		return s == http.StatusServiceUnavailable && strings.Contains(body, "metadata store")
	})
	exec(`ALTER DATABASE ` + name + ` ALLOW_CONNECTIONS true`)
	waitFor(t, 10*time.Second, "readyz recovers with PostgreSQL", func() bool {
		s, _ := readyz(a)
		return s == http.StatusOK
	})
	c.minio.Stop()
	waitFor(t, 15*time.Second, "readyz fails without S3", func() bool {
		s, body := readyz(a)
		return s == http.StatusServiceUnavailable && strings.Contains(body, "blob store")
	})
}

// TestClusterShutdownReleasesLeases: a replica stopped with SIGTERM while
// it fetches a blob and runs an active sync gives both leases back: the
// rows are gone when it has exited, and the other replica fetches the blob
// at once instead of waiting for the lease to lapse.
func TestClusterShutdownReleasesLeases(t *testing.T) {
	up := upstreamreg.Start(t, upstreamreg.Options{})
	proxy := upstreamreg.NewFaultProxy(t, up)
	im := newImage(t, 1350, "amd64", 500<<10)
	seedImage(t, up, "library/app", "v1", im)
	seedImage(t, up, "org/tool", "1.0", newImage(t, 1351, "amd64", 300<<10))
	proxy.Inject(upstreamreg.Fault{Method: http.MethodGet, PathContains: "/blobs/", Count: -1, CutAfter: 100 << 10, Stall: 20 * time.Second})
	// Long leases: a lease that is not handed back blocks the test.
	c := startCluster(t, 2, false, "--insecure-upstream", proxy.Host(), "--fetch-lease-ttl", "1m", "--sync-lease-ttl", "5m",
		"--sync-poll", "1s", "--shutdown-timeout", "1s")
	db := c.sql(t)
	n0, n1 := c.nodes[0], c.nodes[1]
	n0.cacheRule(t, "app-rule", proxy.Host()+"/library/app", "lib/app")
	c.waitRule(t, "lib/app", "app-rule")
	n1.Stop() // the sync runs on replica 0
	n0.cacheRule(t, "tool-sync", proxy.Host()+"/org/tool", "tool", "--sync", "ActiveSync", "--yes")
	blob := im.Layers[0]
	go func() { _ = pullBlob(n0, "lib/app", blob, nil) }()
	waitFor(t, 20*time.Second, "replica 0 holds a fetch lease and the sync lease", func() bool {
		return queryString(db, `SELECT CAST(COUNT(*) >= 2 AS TEXT) FROM fetch_leases`) == "true" &&
			queryString(db, `SELECT holder FROM sync_leases WHERE rule = 'tool-sync'`) != ""
	})
	if err := n0.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if _, ok := n0.Wait(30 * time.Second); !ok {
		t.Fatal("replica 0 did not exit within 30s of SIGTERM")
	}
	if n := queryString(db, `SELECT CAST(COUNT(*) AS TEXT) FROM fetch_leases`); n != "0" {
		t.Errorf("%s fetch leases left after shutdown", n)
	}
	if h := queryString(db, `SELECT holder FROM sync_leases`); h != "" {
		t.Errorf("sync lease still held by %s after shutdown", h)
	}
	proxy.Reset()
	n1 = c.start(t, 1)
	start := time.Now()
	if err := pullBlob(n1, "lib/app", blob, nil); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 30*time.Second {
		t.Errorf("the other replica took %s to fetch the blob (a lease left behind?)", took)
	}
}
