package server

import (
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// testAdminToken is the admin token of in-process servers (strong enough
// to be accepted: 128 bits or more).
const testAdminToken = "server-test-admin-token-0123456789"

// Registries created through the API are served by Host, survive a
// restart (startup flags win over them), and are deleted with their
// content; those of startup flags cannot be deleted.
func TestRegistriesCreatedThroughAPI(t *testing.T) {
	dir := t.TempDir()
	mo := ManagementOptions{AdminToken: testAdminToken}
	ts, _ := startServer(t, dir, &lockedBuffer{}, mo, PullThroughOptions{})
	ts.token = testAdminToken
	const v = "?api-version=2025-04-01"
	body := map[string]any{"location": "local", "sku": map[string]any{"name": "Basic"},
		"properties": map[string]any{"hosts": []string{"team2.example.com"}, "anonymousPullEnabled": true}}
	st, m := ts.do("PUT", armBase+"TeamTwo"+v, "", body)
	props, _ := m["properties"].(map[string]any)
	if st != 201 || m["name"] != "teamtwo" || props["loginServer"] != "team2.example.com" || props["anonymousPullEnabled"] != true {
		t.Fatalf("create: %d %v", st, m)
	}
	if st, m := ts.do("PUT", armBase+"othertwo"+v, "", map[string]any{"sku": map[string]any{"name": "Basic"},
		"properties": map[string]any{"hosts": []string{"team2.example.com"}}}); st != 400 {
		t.Fatalf("host taken by another registry: %d %v", st, m)
	}
	d := digest.FromString("two")
	if st, _ := ts.do("POST", "/v2/team/two/blobs/uploads/?digest="+d.String(), "team2.example.com", "two"); st != 201 {
		t.Fatalf("push on the new registry's host: %d", st)
	}
	if _, cat := ts.do("GET", "/v2/_catalog", "team2.example.com", nil); strings.Join(toStrings(cat["repositories"]), ",") != "team/two" {
		t.Fatalf("new registry catalog: %v", cat)
	}
	if _, cat := ts.do("GET", "/v2/_catalog", "", nil); len(toStrings(cat["repositories"])) != 0 {
		t.Fatalf("default registry sees the new one's content: %v", cat)
	}
	if st, m := ts.do("DELETE", armBase+"default"+v, "", nil); st != 409 {
		t.Fatalf("delete the default registry: %d %v", st, m)
	}
	ts.closer()

	ts2, _ := startServer(t, dir, &lockedBuffer{}, mo, PullThroughOptions{})
	ts2.token = testAdminToken
	if _, cat := ts2.do("GET", "/v2/_catalog", "team2.example.com", nil); strings.Join(toStrings(cat["repositories"]), ",") != "team/two" {
		t.Fatalf("after restart: %v", cat)
	}
	if st, _ := ts2.do("DELETE", armBase+"teamtwo"+v, "", nil); st != 200 {
		t.Fatalf("delete: %d", st)
	}
	if st, _ := ts2.do("GET", armBase+"teamtwo"+v, "", nil); st != 404 {
		t.Fatalf("deleted registry: %d", st)
	}
	if st, _ := ts2.do("DELETE", armBase+"teamtwo"+v, "", nil); st != 204 {
		t.Fatalf("delete again: %d", st)
	}
	// Re-created, it starts empty.
	if st, _ := ts2.do("PUT", armBase+"teamtwo"+v, "", body); st != 201 {
		t.Fatalf("re-create: %d", st)
	}
	if _, cat := ts2.do("GET", "/v2/_catalog", "team2.example.com", nil); len(toStrings(cat["repositories"])) != 0 {
		t.Fatalf("re-created registry has old content: %v", cat)
	}
}

// A replica serves registries another replica created or deleted through
// the API within a few seconds (both share the metadata store).
func TestRegistriesFollowOtherReplicas(t *testing.T) {
	dir := t.TempDir()
	mo := ManagementOptions{AdminToken: testAdminToken}
	a, _ := startServer(t, dir, &lockedBuffer{}, mo, PullThroughOptions{})
	b, _ := startServer(t, dir, &lockedBuffer{}, mo, PullThroughOptions{})
	a.token, b.token = testAdminToken, testAdminToken
	const v = "?api-version=2025-04-01"
	body := map[string]any{"sku": map[string]any{"name": "Standard"}, "properties": map[string]any{"hosts": []string{"team3.example.com"}}}
	if st, m := a.do("PUT", armBase+"teamthree"+v, "", body); st != 201 {
		t.Fatalf("create on a: %d %v", st, m)
	}
	d := digest.FromString("three")
	if st, _ := a.do("POST", "/v2/team/three/blobs/uploads/?digest="+d.String(), "team3.example.com", "three"); st != 201 {
		t.Fatalf("push on a: %d", st)
	}
	catalogOnB := func() string {
		_, cat := b.do("GET", "/v2/_catalog", "team3.example.com", nil)
		return strings.Join(toStrings(cat["repositories"]), ",")
	}
	deadline := time.Now().Add(3 * registrySyncInterval)
	for catalogOnB() != "team/three" {
		if time.Now().After(deadline) {
			t.Fatalf("b's catalog on team3.example.com: %q", catalogOnB())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if st, _ := a.do("DELETE", armBase+"teamthree"+v, "", nil); st != 200 {
		t.Fatalf("delete on a: %d", st)
	}
	deadline = time.Now().Add(3 * registrySyncInterval)
	for {
		st, _ := b.do("GET", armBase+"teamthree"+v, "", nil)
		if st == 404 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("b still has the deleted registry: %d", st)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
