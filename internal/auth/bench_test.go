package auth

import (
	"net/http/httptest"
	"testing"
	"time"
)

// BenchmarkAuthorizeBearer: one bearer-token decision (JWT verify and the
// scope check), the data plane's per-request cost.
func BenchmarkAuthorizeBearer(b *testing.B) {
	svc, _ := newTestService(b, time.Now)
	tok := signedToken(b, svc, "reg01", KindToken, "t1", []Scope{RepoScope("bench/repo", Pull)})
	need := []Scope{RepoScope("bench/repo", Pull)}
	r := httptest.NewRequest("GET", "/v2/bench/repo/manifests/v1", nil)
	r.Header.Set("Authorization", "Bearer "+tok)
	w := httptest.NewRecorder()
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := svc.Authorize(w, r, "reg01", need); !ok {
			b.Fatal("refused")
		}
	}
}

// BenchmarkCheckPassword: one argon2id check (the cost of a first login
// with a credential, before the verified-password cache).
func BenchmarkCheckPassword(b *testing.B) {
	h, err := HashPassword("bench-password")
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if ok, _ := CheckPassword(h, "bench-password"); !ok {
			b.Fatal("mismatch")
		}
	}
}
