package e2e

import (
	"net"
	"net/http"
	"net/url"
	"testing"
	"time"
)

// fromAddr is an HTTP client whose connections come from source address
// ip (any of 127.0.0.0/8): the throttle counts per source address, so each
// case gets an address of its own.
func fromAddr(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext}, Timeout: 30 * time.Second}
}

// failuresUntilRefused sends attempts with a wrong secret to the replicas
// in turn (auth builds the Authorization header) until one is refused
// with 429, and returns how many were answered 401 before; then the right
// secret must be refused (429) on every replica.
func failuresUntilRefused(t *testing.T, c *http.Client, replicas []*arca, path func(*arca) string, auth func(right bool) string) int {
	t.Helper()
	do := func(a *arca, right bool) int {
		req, _ := http.NewRequest(http.MethodGet, a.URL()+path(a), nil)
		req.Header.Set("Authorization", auth(right))
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	failed := 0
	for i := 0; ; i++ {
		switch s := do(replicas[i%len(replicas)], false); s {
		case http.StatusUnauthorized:
			failed++
		case http.StatusTooManyRequests:
			for j, a := range replicas {
				if s := do(a, true); s != http.StatusTooManyRequests {
					t.Errorf("the right secret on replica %d after %d failures: %d, want 429", j, failed, s)
				}
			}
			return failed
		default:
			t.Fatalf("attempt %d on replica %d: %d", i, i%len(replicas), s)
		}
		if i > 50 {
			t.Fatalf("no 429 after %d failures", failed)
		}
	}
}

// TestClusterFailedLoginsThrottled: failed logins spread over two
// replicas reach the limit at the same count as on one replica, for
// registry passwords (the token endpoint, throttled per address and per
// identity) and for management tokens (per address).
func TestClusterFailedLoginsThrottled(t *testing.T) {
	c := startCluster(t, 2, true)
	n0 := c.nodes[0]
	pw := map[string]string{"token-one": n0.token(t, "token-one", "--repository", "app", "content/read"),
		"token-two": n0.token(t, "token-two", "--repository", "app", "content/read")}
	tokenPath := func(a *arca) string {
		return "/oauth2/token?service=" + a.Addr + "&scope=" + url.QueryEscape("repository:app:pull")
	}
	// A right password is no failure: the probe leaves the counts alone.
	c.waitEveryReplica(t, "the tokens", func(a *arca) bool {
		for user, p := range pw {
			if do(t, http.MethodGet, a.URL()+tokenPath(a), map[string]string{"Authorization": basicAuth(user, p)}, nil).Status != http.StatusOK {
				return false
			}
		}
		return true
	})
	registry := func(user string) func(bool) string {
		return func(right bool) string {
			if right {
				return basicAuth(user, pw[user])
			}
			return basicAuth(user, "wrong")
		}
	}
	mgmtPath := func(*arca) string {
		return "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/arca/providers/Microsoft.ContainerRegistry/registries?api-version=2025-11-01"
	}
	management := func(right bool) string {
		if right {
			return "Bearer " + ptAdminToken
		}
		return "Bearer wrong-token"
	}
	for _, tc := range []struct {
		name     string
		src      string
		replicas []*arca
		path     func(*arca) string
		auth     func(bool) string
	}{
		{"registry password, one replica", "127.0.0.2", c.nodes[:1], tokenPath, registry("token-one")},
		{"registry password, two replicas", "127.0.0.3", c.nodes, tokenPath, registry("token-two")},
		{"management token, one replica", "127.0.0.4", c.nodes[:1], mgmtPath, management},
		{"management token, two replicas", "127.0.0.5", c.nodes, mgmtPath, management},
	} {
		n := failuresUntilRefused(t, fromAddr(tc.src), tc.replicas, tc.path, tc.auth)
		t.Logf("%s: refused after %d failures", tc.name, n)
		if n != 10 {
			t.Errorf("%s: refused after %d failures, want 10 (the limit of one replica)", tc.name, n)
		}
	}
}
