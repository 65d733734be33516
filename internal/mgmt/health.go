package mgmt

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/arcacache/arca/internal/rules"
)

// Defaults of the credential health re-checks.
const (
	// DefaultHealthMaxAge is how old a credential set's health may be when a
	// GET shows it before the GET starts a re-check.
	DefaultHealthMaxAge = 5 * time.Minute
	// DefaultHealthInterval is the time between re-checks of every set.
	DefaultHealthInterval = time.Hour
)

// HealthStore stores a re-checked health (metadata.SQLite).
type HealthStore interface {
	SetCredentialSetHealth(ctx context.Context, registry string, checked rules.CredentialSet, h rules.Health) (bool, error)
}

// healthChecks re-checks credential sets so that a secret fixed, rotated
// or expired after the set was written shows in its credentialHealth.
// When each set was last checked is known to this process only (a set it
// never checked counts from its last write, which checked it): replicas
// each re-check, which costs a secret read and a login per interval.
type healthChecks struct {
	h *Handler

	mu      sync.Mutex
	checked map[string]time.Time // registry + "\x00" + lower(name) -> last check
	running map[string]bool
}

func newHealthChecks(h *Handler) *healthChecks {
	return &healthChecks{h: h, checked: map[string]time.Time{}, running: map[string]bool{}}
}

func healthKey(registry, name string) string {
	return strings.ToLower(registry) + "\x00" + strings.ToLower(name)
}

// refreshIfOld starts a re-check of c in the background when its health
// is older than HealthMaxAge. The caller answers with the stored health at
// once: a slow secret store or login server must not hold up a GET.
func (hc *healthChecks) refreshIfOld(registry string, c rules.CredentialSet) {
	key := healthKey(registry, c.Name)
	hc.mu.Lock()
	last := c.ModifiedAt // every write checks
	if t := hc.checked[key]; t.After(last) {
		last = t
	}
	if hc.running[key] || hc.h.opts.Now().Sub(last) < hc.h.opts.HealthMaxAge {
		hc.mu.Unlock()
		return
	}
	hc.running[key] = true
	hc.mu.Unlock()
	go hc.refresh(context.Background(), registry, c)
}

// refresh checks c and stores the result, unless c was rewritten since.
func (hc *healthChecks) refresh(ctx context.Context, registry string, c rules.CredentialSet) {
	key := healthKey(registry, c.Name)
	health := hc.h.checkCredentials(ctx, c)
	hc.mu.Lock()
	hc.checked[key] = hc.h.opts.Now()
	delete(hc.running, key)
	hc.mu.Unlock()
	if health == c.Health {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	stored, err := hc.h.opts.Health.SetCredentialSetHealth(ctx, registry, c, health)
	if err != nil {
		hc.h.log.Warn("store re-checked credential health", "registry", registry, "name", c.Name, "err", err)
		return
	}
	if stored {
		hc.h.log.Info("credential health changed", "registry", registry, "name", c.Name,
			"health", health.Status, "health_code", health.ErrorCode, "was", c.Health.Status)
	}
}

// RunHealthChecks re-checks every credential set of every registry each
// HealthInterval until ctx ends.
func (h *Handler) RunHealthChecks(ctx context.Context) {
	t := time.NewTicker(h.opts.HealthInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, reg := range h.opts.Registries.List() {
			sets, _, err := h.opts.Store.ListCredentialSetsPage(ctx, reg.Name, "", 0)
			if err != nil {
				h.log.Warn("credential health re-check: list credential sets", "registry", reg.Name, "err", err)
				continue
			}
			for _, c := range sets {
				if ctx.Err() != nil {
					return
				}
				h.health.refresh(ctx, reg.Name, c)
			}
		}
	}
}
