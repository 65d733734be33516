package auth

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestScopeMapRulesAddUp(t *testing.T) {
	// ACR's example: sample/* read + sample/teamA/* write + the exact
	// projectB delete.
	p, err := ParseScopeMapActions([]string{
		"repositories/sample/*/content/read",
		"repositories/sample/teamA/*/content/write",
		"repositories/sample/teamA/projectB/content/delete",
	})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		repo string
		want []Action
	}{
		{"sample/teama/projectb", []Action{Pull, Push, Delete}},
		{"sample/teama/projectc", []Action{Pull, Push}},
		{"sample/other", []Action{Pull}},
		{"sample", nil}, // "sample/*" is what is under sample/, not sample itself
		{"samples/x", nil},
		{"other", nil},
	}
	for _, c := range cases {
		if got := p.Granted(c.repo, AllActions); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: got %v, want %v", c.repo, got, c.want)
		}
	}
}

func TestParseScopeMapActions(t *testing.T) {
	valid := []string{"repositories/*/content/read", "repositories/app/metadata/write", "Repositories/Team/App/Content/Delete", "repositories/a/b/*/metadata/read"}
	for _, a := range valid {
		if _, err := ParseScopeMapActions([]string{a}); err != nil {
			t.Errorf("%q: %v", a, err)
		}
	}
	invalid := []string{"", "repositories/app", "repositories/app/content/execute", "repositories/sample/*/teamA/content/read",
		"repositories/sample/teamA*/content/read", "repositories//content/read", "gateway/cr/config/read", "repo/app/content/read",
		"repositories/sample/teamA/*/projectB/*/content/read"}
	for _, a := range invalid {
		if _, err := ParseScopeMapActions([]string{a}); err == nil {
			t.Errorf("%q: accepted", a)
		}
	}
	if _, err := ParseScopeMapActions(nil); err == nil {
		t.Error("no actions accepted")
	}
}

func TestSystemScopeMaps(t *testing.T) {
	want := map[string][]Action{
		ScopeMapPull:  {Pull, MetadataRead},
		ScopeMapPush:  {Pull, Push, MetadataRead, MetadataWrite},
		ScopeMapAdmin: AllActions,
	}
	for name, acts := range want {
		m, ok := LookupSystemScopeMap(name)
		if !ok {
			t.Fatalf("%s missing", name)
		}
		p, err := ParseScopeMapActions(m.Actions)
		if err != nil {
			t.Fatal(err)
		}
		if got := p.Granted("any/repo", AllActions); !reflect.DeepEqual(got, acts) {
			t.Errorf("%s: %v, want %v", name, got, acts)
		}
	}
}

func TestParseScopes(t *testing.T) {
	got, err := ParseScopes([]string{"repository:team/app:pull,push registry:catalog:*", "repository:127.0.0.1:5000/x:pull", "repository(plugin):p:pull"})
	if err != nil {
		t.Fatal(err)
	}
	want := []Scope{
		{"repository", "team/app", []string{"pull", "push"}},
		{"registry", "catalog", []string{"*"}},
		{"repository", "127.0.0.1:5000/x", []string{"pull"}},
		{"repository", "p", []string{"pull"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v", got)
	}
	for _, bad := range []string{"repository", "repository:app", ":app:pull", "repository:a:b:c:pull", "REPO:x:pull", "repository:x:pull;rm"} {
		if _, err := ParseScopes([]string{bad}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestPasswordHash(t *testing.T) {
	h, err := HashPassword("s3cret")
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := CheckPassword(h, "s3cret"); !ok || err != nil {
		t.Fatalf("right password: %v %v", ok, err)
	}
	if ok, _ := CheckPassword(h, "s3cret "); ok {
		t.Fatal("wrong password accepted")
	}
	h2, _ := HashPassword("s3cret")
	if h == h2 {
		t.Fatal("hashes are not salted")
	}
	for _, bad := range []string{"", "$argon2id$v=19$m=1,t=1,p=1$$", "$bcrypt$x", "$argon2id$v=19$m=99999999,t=1,p=1$AAAA$AAAA"} {
		if _, err := CheckPassword(bad, "x"); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// The dummy hash checked for unknown users is built without hashing; it
// must still carry the parameters of a real hash (so the check costs the
// same) and parse, and it matches no password.
func TestDummyHashCostsLikeARealHash(t *testing.T) {
	h, err := HashPassword("s3cret")
	if err != nil {
		t.Fatal(err)
	}
	params := func(h string) string { return strings.Join(strings.Split(h, "$")[:4], "$") }
	if params(dummyHash) != params(h) {
		t.Fatalf("dummy hash parameters %q, a real hash has %q", params(dummyHash), params(h))
	}
	for _, pw := range []string{"", "s3cret", "arca-dummy-password"} {
		if ok, err := CheckPassword(dummyHash, pw); ok || err != nil {
			t.Errorf("%q against the dummy hash: %v %v", pw, ok, err)
		}
	}
}

// At most maxConcurrentChecks argon2id checks run at once; a caller beyond
// them waits (and gives up with its context).
func TestPasswordChecksBounded(t *testing.T) {
	c := newVerifiedCache(time.Minute)
	h, _ := HashPassword("pw")
	for range maxConcurrentChecks {
		c.slots <- struct{}{} // every slot busy
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := c.check(ctx, h, "pw", time.Now()); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("check with every slot busy: %v", err)
	}
	<-c.slots
	if ok, err := c.check(context.Background(), h, "pw", time.Now()); !ok || err != nil {
		t.Fatalf("check with a free slot: %v %v", ok, err)
	}
}
