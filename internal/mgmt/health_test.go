package mgmt

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/arcacache/arca/internal/rules"
	"github.com/arcacache/arca/internal/secrets"
)

// healthOf is the credentialHealth.status of a credential set response.
func healthOf(t *testing.T, r response) string {
	t.Helper()
	props, _ := r.json(t)["properties"].(map[string]any)
	creds, _ := props["authCredentials"].([]any)
	if len(creds) != 1 {
		t.Fatalf("no credential in %s", r.body)
	}
	h, _ := creds[0].(map[string]any)["credentialHealth"].(map[string]any)
	s, _ := h["status"].(string)
	return s
}

// slowChecker is the real resolve-only check behind a gate that, once
// closed, holds every check until it opens: a secret store that hangs.
type slowChecker struct {
	inner  CredentialChecker
	closed atomic.Bool
	open   chan struct{}
}

func (c *slowChecker) Check(ctx context.Context, cs rules.CredentialSet) (string, string, string) {
	if c.closed.Load() {
		select {
		case <-c.open:
		case <-ctx.Done():
			return rules.Unhealthy, "Timeout", ctx.Err().Error()
		}
	}
	return c.inner.Check(ctx, cs)
}

func resolveOnly(t *testing.T) CredentialChecker {
	res, err := secrets.New(secrets.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return ResolveOnlyChecker{Secrets: res}
}

// A secret fixed after the credential set was written shows up as Healthy:
// a GET finding old health answers at once and re-checks behind it, also
// while the secret store hangs.
func TestCredentialHealthRecheckedOnGet(t *testing.T) {
	dir := t.TempDir()
	user, pass := filepath.Join(dir, "user"), filepath.Join(dir, "pass")
	if err := os.WriteFile(pass, []byte("p"), 0o600); err != nil {
		t.Fatal(err)
	}
	checker := &slowChecker{inner: resolveOnly(t), open: make(chan struct{})}
	f := newFixture(t, func(o *Options) {
		o.Checker, o.HealthMaxAge, o.CheckTimeout = checker, time.Millisecond, time.Minute
	})
	set := base("default") + "/credentialSets/fixedlater"
	r := f.do("PUT", set, credSetBody("ghcr.io", "file://"+user, "file://"+pass))
	mustStatus(t, "create", r, 201)
	if h := healthOf(t, r); h != rules.Unhealthy {
		t.Fatalf("health with the username file missing: %s", h)
	}

	// The secret store hangs: GETs still answer, with the stored health.
	checker.closed.Store(true)
	for range 3 {
		done := make(chan response, 1)
		go func() { done <- f.do("GET", set, nil) }()
		select {
		case r = <-done:
			mustStatus(t, "GET while the check hangs", r, 200)
		case <-time.After(20 * time.Second):
			t.Fatal("GET waited for a hanging credential check")
		}
	}
	close(checker.open)

	if err := os.WriteFile(user, []byte("u"), 0o600); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for healthOf(t, f.do("GET", set, nil)) != rules.Healthy {
		if time.Now().After(deadline) {
			t.Fatal("the fixed secret never showed as Healthy on GET")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The periodic pass re-checks every set without any GET.
func TestCredentialHealthRecheckedPeriodically(t *testing.T) {
	dir := t.TempDir()
	user := filepath.Join(dir, "user")
	if err := os.WriteFile(user, []byte("u"), 0o600); err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, func(o *Options) { o.Checker, o.HealthInterval = resolveOnly(t), 20*time.Millisecond })
	mustStatus(t, "create", f.do("PUT", base("teamreg")+"/credentialSets/expiring", credSetBody("ghcr.io", "file://"+user, "file://"+user)), 201)
	h, err := New(Options{Registries: mustRegistries(t), Store: f.meta, Principals: mustPrincipals(t, f.meta), Checker: resolveOnly(t), HealthInterval: 20 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	// The secret expires (before the pass starts: resolved values are
	// cached for minutes).
	if err := os.Remove(user); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go h.RunHealthChecks(ctx)
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := f.meta.GetCredentialSet(ctx, "teamreg", "expiring")
		if err != nil {
			t.Fatal(err)
		}
		if c.Health.Status == rules.Unhealthy && c.Health.ErrorCode == "UsernameSecretNotResolved" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("health after the secret went: %+v", c.Health)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func mustRegistries(t *testing.T) *Registries {
	regs, err := NewRegistries("default", []string{"teamreg=team.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	return regs
}

func mustPrincipals(t *testing.T, store PrincipalStore) *Principals {
	p, err := NewPrincipals(store, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.SetAdminToken(context.Background(), testToken); err != nil {
		t.Fatal(err)
	}
	return p
}
