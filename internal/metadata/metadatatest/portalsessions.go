package metadatatest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/arcacache/arca/internal/metadata"
)

// testPortalSessions: a session reads back as written, a second one with
// the same ID conflicts, touching only moves the last use forward, delete
// ends it (twice is no error), prune drops exactly the idle ones.
func testPortalSessions(t *testing.T, open Opener) {
	ctx := context.Background()
	s := open(t)
	t0 := time.Now().UTC().Truncate(time.Microsecond)
	a := metadata.PortalSession{IDHash: "aa01", Principal: "ci-bot", Stamp: "st1", CSRF: "c1", Created: t0, LastUsed: t0}
	if err := s.PutPortalSession(ctx, a); err != nil {
		t.Fatal(err)
	}
	if err := s.PutPortalSession(ctx, a); !errors.Is(err, metadata.ErrConflict) {
		t.Fatalf("second session with one ID: %v, want ErrConflict", err)
	}
	got, err := s.GetPortalSession(ctx, "aa01")
	if err != nil || got != a {
		t.Fatalf("get: %+v, %v; want %+v", got, err, a)
	}
	if _, err := s.GetPortalSession(ctx, "AA01"); !errors.Is(err, metadata.ErrNotFound) {
		t.Fatalf("get of another ID: %v, want ErrNotFound", err)
	}
	later := t0.Add(time.Hour)
	if err := s.TouchPortalSession(ctx, "aa01", later); err != nil {
		t.Fatal(err)
	}
	if err := s.TouchPortalSession(ctx, "aa01", t0); err != nil { // older: ignored
		t.Fatal(err)
	}
	if got, _ := s.GetPortalSession(ctx, "aa01"); !got.LastUsed.Equal(later) || !got.Created.Equal(t0) {
		t.Fatalf("after touches: %+v, want last use %v", got, later)
	}
	b := metadata.PortalSession{IDHash: "bb02", Principal: "admin", Stamp: "st2", CSRF: "c2", Created: t0, LastUsed: t0}
	if err := s.PutPortalSession(ctx, b); err != nil {
		t.Fatal(err)
	}
	n, err := s.PrunePortalSessions(ctx, t0.Add(time.Minute))
	if err != nil || n != 1 {
		t.Fatalf("prune: %d, %v; want 1", n, err)
	}
	if _, err := s.GetPortalSession(ctx, "bb02"); !errors.Is(err, metadata.ErrNotFound) {
		t.Fatalf("pruned session: %v, want ErrNotFound", err)
	}
	if err := s.DeletePortalSession(ctx, "aa01"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeletePortalSession(ctx, "aa01"); err != nil {
		t.Fatalf("deleting a gone session: %v", err)
	}
	if _, err := s.GetPortalSession(ctx, "aa01"); !errors.Is(err, metadata.ErrNotFound) {
		t.Fatalf("deleted session: %v, want ErrNotFound", err)
	}
}
