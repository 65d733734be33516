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
