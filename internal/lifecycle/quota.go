package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/arcacache/arca/internal/config"
	"github.com/arcacache/arca/internal/errcode"
	"github.com/arcacache/arca/internal/metadata"
	"github.com/arcacache/arca/internal/rules"
)

// UsageStore reads quotas and usage.
type UsageStore interface {
	GetRegistrySettings(ctx context.Context, registry string) (metadata.RegistrySettings, error)
	RegistryUsage(ctx context.Context, registry string) ([]metadata.RepoUsage, error)
}

// PushQuotaStore reads the storage quota and the pushed bytes it bounds.
type PushQuotaStore interface {
	GetRegistrySettings(ctx context.Context, registry string) (metadata.RegistrySettings, error)
	PushedBytes(ctx context.Context, registry string) (int64, error)
}

// PushQuota refuses pushes that would take a registry's pushed content
// over its storage quota. The quota and the usage are read at most once
// per maxAge per registry (usage is a sum over the pushed repositories'
// rows), and pushes accepted in between are added, so the bound holds
// within one replica; replicas pushing at once may overshoot by what each
// accepted within maxAge.
type PushQuota struct {
	store  PushQuotaStore
	maxAge time.Duration
	now    func() time.Time

	mu    sync.Mutex
	state map[string]*pushState
}

type pushState struct {
	at          time.Time
	quota, used int64
	// loading is closed when the read under way ends.
	loading chan struct{}
	err     error
}

// NewPushQuota returns a PushQuota reading store at most once per maxAge.
func NewPushQuota(store PushQuotaStore, maxAge time.Duration) (*PushQuota, error) {
	if store == nil || maxAge <= 0 {
		return nil, errors.New("lifecycle: push quota needs a store and a positive refresh interval")
	}
	return &PushQuota{store: store, maxAge: maxAge, now: time.Now, state: map[string]*pushState{}}, nil
}

// Check refuses (errcode DENIED) a push of n more bytes to registry when
// it would exceed the storage quota; n < 0 means the size is not known
// yet, which is refused only when the quota is already reached.
func (q *PushQuota) Check(ctx context.Context, registry string, n int64) error {
	quota, used, err := q.get(ctx, registry)
	if err != nil || quota <= 0 {
		return err
	}
	if (n < 0 && used >= quota) || (n >= 0 && used+n > quota) {
		what := "more"
		if n >= 0 {
			what = config.FormatSize(n) + " more"
		}
		return errcode.New(errcode.Denied, fmt.Sprintf(
			"storage quota exceeded: registry %s holds %s of pushed content and its storage quota is %s; pushing %s is refused (delete images, or raise the quota: arca update -n %s --storage-quota SIZE)",
			registry, config.FormatSize(used), config.FormatSize(quota), what, registry))
	}
	return nil
}

// Added counts n bytes pushed to registry since the last read.
func (q *PushQuota) Added(registry string, n int64) {
	q.mu.Lock()
	if st, ok := q.state[registry]; ok && st.loading == nil {
		st.used += n
	}
	q.mu.Unlock()
}

// Invalidate makes the next Check read registry's quota and usage again.
func (q *PushQuota) Invalidate(registry string) {
	q.mu.Lock()
	if st, ok := q.state[registry]; ok && st.loading == nil {
		delete(q.state, registry)
	}
	q.mu.Unlock()
}

// get returns registry's quota and pushed bytes; one read at a time per
// registry (others wait for it), none under the lock.
func (q *PushQuota) get(ctx context.Context, registry string) (int64, int64, error) {
	q.mu.Lock()
	st, ok := q.state[registry]
	switch {
	case ok && st.loading != nil:
		ch := st.loading
		q.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return 0, 0, ctx.Err()
		}
		q.mu.Lock()
		quota, used, err := st.quota, st.used, st.err
		q.mu.Unlock()
		return quota, used, err
	case ok && st.err == nil && q.now().Sub(st.at) < q.maxAge:
		quota, used := st.quota, st.used
		q.mu.Unlock()
		return quota, used, nil
	}
	st = &pushState{loading: make(chan struct{})}
	q.state[registry] = st
	q.mu.Unlock()

	quota, used, err := q.read(ctx, registry)
	q.mu.Lock()
	st.quota, st.used, st.err, st.at = quota, used, err, q.now()
	close(st.loading)
	st.loading = nil
	if err != nil {
		delete(q.state, registry)
	}
	q.mu.Unlock()
	return quota, used, err
}

func (q *PushQuota) read(ctx context.Context, registry string) (int64, int64, error) {
	set, err := q.store.GetRegistrySettings(ctx, registry)
	if errors.Is(err, metadata.ErrNotFound) {
		return 0, 0, nil
	}
	if err != nil || set.StorageQuota <= 0 {
		return 0, 0, err
	}
	pushed, err := q.store.PushedBytes(ctx, registry)
	if err != nil {
		return 0, 0, err
	}
	return set.StorageQuota, pushed, nil
}

// Usage is one entry of a registry's usages (ACR's listUsages shape).
type Usage struct {
	Name         string `json:"name"`
	Limit        int64  `json:"limit"` // 0: no quota
	CurrentValue int64  `json:"currentValue"`
	Unit         string `json:"unit"`
}

// RuleStore lists a registry's cache rules.
type RuleStore interface {
	ListCacheRules(ctx context.Context, registry string) ([]rules.Rule, error)
}

// Usages lists what registry holds against its quotas: Size (all bytes),
// PushedSize (against the storage quota), CachedSize (against the cache
// quota) and CachedSize/<rule> per cache rule. A blob in two repositories
// counts in each, as the quotas count it.
func Usages(ctx context.Context, store interface {
	UsageStore
	RuleStore
}, registry string) ([]Usage, error) {
	set, err := store.GetRegistrySettings(ctx, registry)
	if err != nil && !errors.Is(err, metadata.ErrNotFound) {
		return nil, err
	}
	us, err := store.RegistryUsage(ctx, registry)
	if err != nil {
		return nil, err
	}
	list, err := store.ListCacheRules(ctx, registry)
	if err != nil {
		return nil, err
	}
	ix := rules.NewIndex(list)
	byRule := map[string]int64{}
	for _, r := range list {
		byRule[r.Name] = 0
	}
	for _, u := range us {
		if u.Pushed {
			continue
		}
		if r, _, ok := ix.Match(u.Repo); ok {
			byRule[r.Name] += u.Bytes()
		}
	}
	cached, pushed := CachedBytes(us)
	out := []Usage{
		{Name: "Size", CurrentValue: cached + pushed, Unit: "Bytes"},
		{Name: "PushedSize", Limit: set.StorageQuota, CurrentValue: pushed, Unit: "Bytes"},
		{Name: "CachedSize", Limit: set.CacheQuota, CurrentValue: cached, Unit: "Bytes"},
	}
	if set.StorageQuota > 0 && set.CacheQuota > 0 {
		out[0].Limit = set.StorageQuota + set.CacheQuota
	}
	names := make([]string, 0, len(byRule))
	for n := range byRule {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		out = append(out, Usage{Name: "CachedSize/" + n, CurrentValue: byRule[n], Unit: "Bytes"})
	}
	return out, nil
}
