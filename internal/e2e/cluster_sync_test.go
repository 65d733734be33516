package e2e

import (
	"context"
	"database/sql"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/arcacache/arca/internal/testutil/upstreamreg"
)

// clusterDB opens the cluster's database, to look at leases and runs.
func (c *cluster) sql(t testing.TB) *sql.DB {
	t.Helper()
	db, err := sql.Open("pgx", c.db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// holderNode returns the replica whose process holds the lease named by
// holder (host-pid-random), or -1.
func (c *cluster) holderNode(holder string) int {
	for i, a := range c.nodes {
		if a != nil && strings.Contains(holder, fmt.Sprintf("-%d-", a.Pid())) {
			return i
		}
	}
	return -1
}

func queryString(db *sql.DB, q string, args ...any) string {
	var s string
	_ = db.QueryRowContext(context.Background(), q, args...).Scan(&s)
	return s
}

// TestClusterActiveSyncFailsOver: an ActiveSync rule runs on one replica
// of three at a time; SIGKILL that replica mid-run and another takes the
// run over once the lease lapses (--sync-lease-ttl 4s, --sync-poll 1s),
// and finishes it; a rule change made through another replica is picked
// up by whichever replica runs it next.
func TestClusterActiveSyncFailsOver(t *testing.T) {
	up := upstreamreg.Start(t, upstreamreg.Options{})
	proxy := upstreamreg.NewFaultProxy(t, up)
	seedImage(t, up, "org/tool", "1.0", newImage(t, 1330, "amd64", 400<<10))
	seedImage(t, up, "org/tool", "2.0", newImage(t, 1331, "amd64", 300<<10))
	// Every blob GET stalls: a run lasts long enough to be killed.
	proxy.Inject(upstreamreg.Fault{Method: http.MethodGet, PathContains: "/blobs/", Count: -1, CutAfter: 100 << 10, Stall: 3 * time.Second})
	c := startCluster(t, 3, false, "--insecure-upstream", proxy.Host(), "--sync-lease-ttl", "4s", "--sync-poll", "1s")
	db := c.sql(t)
	c.nodes[0].cacheRule(t, "tool-sync", proxy.Host()+"/org/tool", "tool", "--sync", "ActiveSync", "--tag-starts-with", "1.", "--yes")

	var first int
	waitFor(t, 20*time.Second, "a replica takes the rule's lease", func() bool {
		first = c.holderNode(queryString(db, `SELECT holder FROM sync_leases WHERE rule = 'tool-sync'`))
		return first >= 0
	})
	time.Sleep(500 * time.Millisecond) // mid-run: the stalled blob
	c.nodes[first].Kill9()
	killed := time.Now()
	c.nodes[first] = nil
	var second int
	took := waitFor(t, 30*time.Second, "another replica takes the lease over", func() bool {
		second = c.holderNode(queryString(db, `SELECT holder FROM sync_leases WHERE rule = 'tool-sync'`))
		return second >= 0
	})
	t.Logf("replica %d killed mid-run; replica %d took the rule over after %s", first, second, took.Round(time.Millisecond))
	waitFor(t, 30*time.Second, "the run taken over succeeds", func() bool {
		return queryString(db, `SELECT result FROM sync_runs WHERE rule = 'tool-sync'`) == "Succeeded"
	})
	t.Logf("run finished %s after the kill", time.Since(killed).Round(time.Millisecond))
	if got := queryString(db, `SELECT state FROM sync_tags WHERE rule = 'tool-sync' AND tag = '1.0'`); got != "done" {
		t.Errorf("tag 1.0: state %q, want done", got)
	}

	// Change the rule through a replica other than the one running it.
	other := c.nodes[3-first-second]
	other.cli(t, "cache", "update", "-r", "default", "-n", "tool-sync", "--tag-starts-with", "2.", "-o", "none")
	waitFor(t, 40*time.Second, "the changed rule's run syncs tag 2.0", func() bool {
		return queryString(db, `SELECT state FROM sync_tags WHERE rule = 'tool-sync' AND tag = '2.0'`) == "done"
	})
}

// TestClusterRateLimitBudgetShared: one replica sees the upstream's
// ratelimit-remaining nearly spent; active sync on the other replicas,
// which never saw the header themselves, defers: the budget is the
// cluster's.
func TestClusterRateLimitBudgetShared(t *testing.T) {
	up := upstreamreg.Start(t, upstreamreg.Options{})
	proxy := upstreamreg.NewFaultProxy(t, up)
	im := newImage(t, 1340, "amd64", 10<<10)
	seedImage(t, up, "library/app", "v1", im)
	seedImage(t, up, "org/tool", "1.0", newImage(t, 1341, "amd64", 20<<10))
	c := startCluster(t, 3, false, "--insecure-upstream", proxy.Host(), "--sync-poll", "1s")
	c.nodes[0].cacheRule(t, "app-rule", proxy.Host()+"/library/app", "lib/app")
	c.waitRule(t, "lib/app", "app-rule")

	proxy.SetHeader("ratelimit-limit", "100;w=3600")
	proxy.SetHeader("ratelimit-remaining", "3;w=3600")
	getCached(t, c.nodes[0].URL()+"/v2/lib/app/manifests/v1", im.Digest())
	proxy.SetHeader("ratelimit-limit", "")
	proxy.SetHeader("ratelimit-remaining", "")
	db := c.sql(t)
	waitFor(t, 10*time.Second, "replica 0 records the observation", func() bool {
		return queryString(db, `SELECT CAST(remaining AS TEXT) FROM upstream_ratelimits`) == "3"
	})
	// Replica 0 leaves: the rule runs on replica 1 or 2.
	c.nodes[0].Stop()
	c.nodes[0] = nil
	c.nodes[1].cacheRule(t, "tool-sync", proxy.Host()+"/org/tool", "tool", "--sync", "ActiveSync", "--yes")
	waitFor(t, 30*time.Second, "the run defers on the shared budget", func() bool {
		return queryString(db, `SELECT result FROM sync_runs WHERE rule = 'tool-sync'`) == "Deferred"
	})
	if got := queryString(db, `SELECT error FROM sync_runs WHERE rule = 'tool-sync'`); !strings.Contains(got, "rate limit nearly spent (3 of 100 left)") {
		t.Errorf("deferred run's message %q", got)
	}
	if n := upstreamGETs(up, "/org/tool/blobs/"); n != 0 {
		t.Errorf("the deferred sync fetched %d blobs", n)
	}
}
