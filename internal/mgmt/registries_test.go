package mgmt

import (
	"errors"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
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

func TestAdminTokenStore(t *testing.T) {
	dir := t.TempDir()
	if _, err := ReadAdminToken(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("empty dir: %v", err)
	}
	token, tok, err := GenerateAdminToken()
	if err != nil || !strings.HasPrefix(token, "arca_") || len(token) < 40 {
		t.Fatalf("generate: %q %v", token, err)
	}
	if err := StoreAdminToken(dir, tok); err != nil {
		t.Fatal(err)
	}
	stored, err := os.ReadFile(filepath.Join(dir, AdminTokenFile))
	if err != nil || strings.Contains(string(stored), token) {
		t.Fatalf("stored %q (err %v): must be the hash, not the token", stored, err)
	}
	if fi, _ := os.Stat(filepath.Join(dir, AdminTokenFile)); fi.Mode().Perm() != 0o600 {
		t.Errorf("token file mode %v", fi.Mode().Perm())
	}
	check := func(tok *AdminToken, bearer string) bool {
		r, _ := http.NewRequest(http.MethodGet, "/", nil)
		r.Header.Set("Authorization", "Bearer "+bearer)
		return tok.check(r) == nil
	}
	read, err := ReadAdminToken(dir)
	if err != nil || !check(read, token) || check(read, token+"x") {
		t.Fatalf("read back: %v", err)
	}
	// A second store (another replica, a second first start) does not overwrite.
	_, other, _ := GenerateAdminToken()
	if err := StoreAdminToken(dir, other); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second store: %v", err)
	}
	// A corrupt file is an error, not a silent new token.
	if err := os.WriteFile(filepath.Join(dir, AdminTokenFile), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadAdminToken(dir); err == nil || errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("corrupt file: %v", err)
	}
	if _, err := NewAdminToken(""); err == nil {
		t.Fatal("empty token accepted")
	}
}
