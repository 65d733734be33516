package upstream

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"oras.land/oras-go/v2/registry/remote/auth"
)

func jwtToken(t *testing.T, iat, exp time.Time) string {
	t.Helper()
	claims := jwt.MapClaims{"exp": exp.Unix()}
	if !iat.IsZero() {
		claims["iat"] = iat.Unix()
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte("k"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestTokenExpiry(t *testing.T) {
	now := time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC)
	skewed := now.Add(-time.Hour) // issuer's clock an hour behind ours
	tests := []struct {
		name string
		tok  string
		want time.Time
	}{
		{"docker hub 300s", jwtToken(t, now, now.Add(300*time.Second)), now.Add(270 * time.Second)},
		{"issuer clock skew", jwtToken(t, skewed, skewed.Add(300*time.Second)), now.Add(270 * time.Second)},
		{"long token, margin capped", jwtToken(t, now, now.Add(time.Hour)), now.Add(time.Hour - 30*time.Second)},
		{"no iat", jwtToken(t, time.Time{}, now.Add(100*time.Second)), now.Add(90 * time.Second)},
		{"no iat, already expired", jwtToken(t, time.Time{}, now.Add(-time.Second)), time.Time{}},
		{"opaque", "djE6YXJjYTpzZWNyZXQ=", time.Time{}},
	}
	for _, tt := range tests {
		if got := tokenExpiry(tt.tok, now); !got.Equal(tt.want) {
			t.Errorf("%s: tokenExpiry = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestTokenCacheExpiresAndShares(t *testing.T) {
	now := time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC)
	c := newTokenCache()
	c.now = func() time.Time { return now }
	ctx := context.Background()
	tok := jwtToken(t, now, now.Add(10*time.Second))

	var fetches atomic.Int32
	release := make(chan struct{})
	fetch := func(context.Context) (string, error) {
		fetches.Add(1)
		<-release
		return tok, nil
	}
	var wg sync.WaitGroup
	var calling atomic.Int32
	for range 8 {
		wg.Go(func() {
			calling.Add(1)
			if got, err := c.Set(ctx, "reg", auth.SchemeBearer, "repository:a:pull", fetch); err != nil || got != tok {
				t.Errorf("Set = %q, %v", got, err)
			}
		})
	}
	// Every caller is at its Set (however late a loaded machine starts the
	// goroutines), and then some time to join the fetch in flight.
	for calling.Load() < 8 {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	close(release)
	wg.Wait()
	if n := fetches.Load(); n != 1 {
		t.Errorf("8 concurrent Sets fetched %d times, want 1", n)
	}
	if s, err := c.GetScheme(ctx, "reg"); err != nil || s != auth.SchemeBearer {
		t.Errorf("GetScheme = %v, %v", s, err)
	}
	if got, err := c.GetToken(ctx, "reg", auth.SchemeBearer, "repository:a:pull"); err != nil || got != tok {
		t.Errorf("GetToken before expiry = %q, %v", got, err)
	}
	now = now.Add(9 * time.Second) // within the last tenth of its life
	if _, err := c.GetToken(ctx, "reg", auth.SchemeBearer, "repository:a:pull"); err == nil {
		t.Error("GetToken returned a token about to expire")
	}
	// A scheme change drops everything cached for the host.
	if _, err := c.Set(ctx, "reg", auth.SchemeBasic, "", func(context.Context) (string, error) { return "dTpw", nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetToken(ctx, "reg", auth.SchemeBearer, "repository:a:pull"); err == nil {
		t.Error("bearer token survived a scheme change")
	}
	if got, err := c.GetToken(ctx, "reg", auth.SchemeBasic, ""); err != nil || got != "dTpw" {
		t.Errorf("basic token = %q, %v (basic never expires)", got, err)
	}

	// A caller that gives up does not fail the fetch for others.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := c.Set(cctx, "reg2", auth.SchemeBearer, "k", func(ctx context.Context) (string, error) {
		time.Sleep(20 * time.Millisecond)
		return tok, ctx.Err()
	}); err == nil {
		t.Error("Set with a cancelled context returned no error")
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		got, err := c.GetToken(ctx, "reg2", auth.SchemeBearer, "k")
		if err == nil && got == tok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the detached fetch did not complete and cache within 30s: %q, %v", got, err)
		}
	}
}
