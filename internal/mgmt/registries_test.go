package mgmt

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/arcacache/arca/internal/metadata"
)

func TestRegistriesForHost(t *testing.T) {
	rs, err := NewRegistries("MyRegistry", []string{
		"teamreg=team.example.com,TEAM2.example.com:5000",
		"team3.example.com", // continues teamreg (env values arrive split at commas)
		"v6registry=[::1]:5001",
		"ipregistry=10.0.0.1",
		"myregistry=arca.example.com",
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ host, want string }{
		{"team.example.com", "teamreg"},
		{"TEAM.example.com:443", "teamreg"},
		{"team.example.com.", "teamreg"},
		{"team2.example.com:5000", "teamreg"},
		{"team2.example.com", "myregistry"}, // only :5000 is configured
		{"team2.example.com:6000", "myregistry"},
		{"team3.example.com:8080", "teamreg"},
		{"[::1]:5001", "v6registry"},
		{"[::1]:5002", "myregistry"},
		{"10.0.0.1:5000", "ipregistry"},
		{"arca.example.com", "myregistry"},
		{"localhost:5000", "myregistry"},
		{"", "myregistry"},
	} {
		if got := rs.ForHost(tc.host); got != tc.want {
			t.Errorf("ForHost(%q) = %q, want %q", tc.host, got, tc.want)
		}
	}
	req, _ := http.NewRequest(http.MethodGet, "http://team.example.com/v2/", nil)
	if rs.ForRequest(req) != "teamreg" {
		t.Error("ForRequest ignores Host")
	}
	if r, ok := rs.Lookup("TEAMREG"); !ok || len(r.Hosts) != 3 {
		t.Errorf("Lookup(TEAMREG) = %+v, %v", r, ok)
	}
	var names []string
	for _, r := range rs.List() {
		names = append(names, r.Name)
	}
	if strings.Join(names, ",") != "myregistry,ipregistry,teamreg,v6registry" {
		t.Errorf("List = %v", names)
	}
}

func TestRegistriesInvalid(t *testing.T) {
	for _, tc := range []struct {
		def   string
		specs []string
	}{
		{"ab", nil},
		{"my-registry", nil},
		{"default", []string{"teamreg"}},
		{"default", []string{"teamreg="}},
		{"default", []string{"bad_name=x.example.com"}},
		{"default", []string{"teamreg=host with space"}},
		{"default", []string{"teamreg=a.example.com", "otherreg=A.example.com"}},
		{"default", []string{"teamreg=a.example.com/path"}},
	} {
		if _, err := NewRegistries(tc.def, tc.specs); err == nil {
			t.Errorf("NewRegistries(%q, %q) accepted", tc.def, tc.specs)
		}
	}
}

func TestAdminTokenInMetadataStore(t *testing.T) {
	ctx := context.Background()
	open := func() metadata.Store {
		meta, err := metadata.OpenSQLite(ctx, filepath.Join(t.TempDir(), "arca.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { meta.Close() })
		return meta
	}
	meta := open()
	p, _ := NewPrincipals(meta, nil)
	token, store, err := p.EnsureAdmin(ctx, t.TempDir())
	if err != nil || !strings.HasPrefix(token, "arca_") || len(token) < 40 || store == nil {
		t.Fatalf("generate: %q %v", token, err)
	}
	if _, ok, _ := p.Verify(ctx, token); ok {
		t.Fatal("generated token works before it is stored")
	}
	if err := store(); err != nil {
		t.Fatal(err)
	}
	if c, ok, _ := p.Verify(ctx, token); !ok || c.Role != RoleOwner || c.Name != AdminPrincipal {
		t.Fatalf("stored token: %+v %v", c, ok)
	}
	if _, ok, _ := p.Verify(ctx, token+"x"); ok {
		t.Fatal("wrong token accepted")
	}
	pr, _ := meta.GetPrincipal(ctx, AdminPrincipal)
	if len(pr.Salt) != 16 || strings.Contains(string(pr.Hash), token) {
		t.Fatalf("stored principal: salt %d bytes", len(pr.Salt))
	}
	// A second start keeps it.
	if again, _, err := p.EnsureAdmin(ctx, t.TempDir()); err != nil || again != "" {
		t.Fatalf("second start: %q %v", again, err)
	}
	// Weak configured secrets are refused; a strong one replaces the old.
	for _, weak := range []string{"x", "change-me", "tok", strings.Repeat("a", 64), "abcdefgh12345678"} {
		if err := p.SetAdminToken(ctx, weak); err == nil {
			t.Errorf("weak admin token %q accepted", weak)
		}
	}
	strong := "Kq3v9Zt1xW8pLr2Ny6Bc4Hs7Jd0Fg5Me"
	if err := p.SetAdminToken(ctx, strong); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := p.Verify(ctx, token); ok {
		t.Fatal("replaced token still accepted")
	}

	// An earlier version's unsalted hash file is imported once.
	dir := t.TempDir()
	sum := sha256.Sum256([]byte(token))
	if err := os.WriteFile(filepath.Join(dir, legacyAdminTokenFile), []byte(hex.EncodeToString(sum[:])+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p2, _ := NewPrincipals(open(), nil)
	if tok, _, err := p2.EnsureAdmin(ctx, dir); err != nil || tok != "" {
		t.Fatalf("import: %q %v", tok, err)
	}
	if _, ok, _ := p2.Verify(ctx, token); !ok {
		t.Fatal("imported token refused")
	}
	if err := os.WriteFile(filepath.Join(dir, legacyAdminTokenFile), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := func() (string, func() error, error) {
		p3, _ := NewPrincipals(open(), nil)
		return p3.EnsureAdmin(ctx, dir)
	}(); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("corrupt file: %v", err)
	}
}
