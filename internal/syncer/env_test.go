package syncer_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/arcacache/arca/internal/blobstore"
	"github.com/arcacache/arca/internal/cache"
	"github.com/arcacache/arca/internal/metadata"
	"github.com/arcacache/arca/internal/oci"
	"github.com/arcacache/arca/internal/registry"
	"github.com/arcacache/arca/internal/rules"
	"github.com/arcacache/arca/internal/syncer"
	"github.com/arcacache/arca/internal/testutil/toolpath"
	"github.com/arcacache/arca/internal/testutil/upstreamreg"
	"github.com/arcacache/arca/internal/upstream"
)

// The real parts the syncer is wired to.
var (
	_ syncer.Fetcher  = (*cache.Cache)(nil)
	_ syncer.Resolver = (*cache.RuleSet)(nil)
	_ syncer.Store    = (metadata.Store)(nil)
	_ syncer.Upstream = (*upstream.Client)(nil)
)

const testRegistry = "arcatest"

// env is one arca replica's data path (store, cache, rules, upstream
// client) over a temp dir, against a real upstream registry.
type env struct {
	t      *testing.T
	dir    string
	meta   metadata.Store
	blobs  *blobstore.FS
	cache  *cache.Cache
	rules  *cache.RuleSet
	client *upstream.Client
}

func newEnv(t *testing.T, upstreamHosts ...string) *env {
	t.Helper()
	dir := t.TempDir()
	return openEnv(t, dir, upstreamHosts...)
}

// openEnv opens (or reopens, as after a restart) the replica state in dir.
func openEnv(t *testing.T, dir string, upstreamHosts ...string) *env {
	t.Helper()
	ctx := context.Background()
	blobs, err := blobstore.NewFS(filepath.Join(dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	dbPath := filepath.Join(dir, "arca.db")
	meta, err := metadata.OpenSQLite(ctx, dbPath)
	if err != nil {
		t.Fatal(err)
	}
	client, err := upstream.New(upstream.Options{Insecure: upstreamHosts, MaxRetries: 1, RetryBackoff: 10 * time.Millisecond,
		MaxRetryAfter: time.Second, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	c := cache.New(cache.Options{Blobs: blobs, Meta: meta, Upstream: client, FetchTimeout: time.Minute,
		Logger: quietLogger(), Registerer: prometheus.NewRegistry()})
	e := &env{t: t, dir: dir, meta: meta, blobs: blobs, cache: c, rules: cache.NewRuleSet(meta, nil), client: client}
	t.Cleanup(func() { c.Wait(); meta.Close() })
	return e
}

func quietLogger() *slog.Logger {
	if os.Getenv("ARCA_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// newSyncer builds a Syncer on env's parts; o's zero fields get them.
func (e *env) newSyncer(o syncer.Options) (*syncer.Syncer, *prometheus.Registry) {
	e.t.Helper()
	reg := prometheus.NewRegistry()
	if o.Cache == nil {
		o.Cache = e.cache
	}
	o.Rules, o.Store, o.Upstream, o.Registerer = e.rules, e.meta, e.client, reg
	if o.Logger == nil {
		o.Logger = quietLogger()
	}
	s, err := syncer.New(o)
	if err != nil {
		e.t.Fatal(err)
	}
	return s, reg
}

// putRule stores an ActiveSync rule (as the management API would, after
// validating it).
func (e *env) putRule(r rules.Rule) {
	e.t.Helper()
	if r.SyncMode == "" {
		r.SyncMode = rules.ActiveSync
	}
	r.ProvisioningState = rules.StateSucceeded
	now := time.Now()
	r.CreatedAt, r.ModifiedAt = now, now
	err := e.meta.UpdateRules(context.Background(), testRegistry, func(tx metadata.RulesTx) error { return tx.PutCacheRule(r) })
	if err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) syncRule(s *syncer.Syncer, rule string) syncer.Status {
	e.t.Helper()
	st, err := s.SyncRule(context.Background(), testRegistry, rule)
	if err != nil {
		e.t.Fatalf("sync rule %s: %v", rule, err)
	}
	return st
}

// names sorts a listing, failing the test on err.
func (e *env) names(list []string, _ bool, err error) []string {
	e.t.Helper()
	if err != nil {
		e.t.Fatal(err)
	}
	sort.Strings(list)
	return append([]string{}, list...)
}

// digestNames sorts a listing of digests as strings, failing the test on err.
func (e *env) digestNames(list []digest.Digest, more bool, err error) []string {
	e.t.Helper()
	out := make([]string, len(list))
	for i, d := range list {
		out[i] = d.String()
	}
	return e.names(out, more, err)
}

// tags are the tags arca holds for repo.
func (e *env) tags(repo string) []string {
	return e.names(e.meta.ListTags(context.Background(), testRegistry, repo, "", 0))
}

// manifests are the manifest digests arca holds for repo.
func (e *env) manifests(repo string) []string {
	return e.digestNames(e.meta.ListManifests(context.Background(), testRegistry, repo, "", 0))
}

// blobsOf are the blob digests linked to repo (manifest bytes excluded).
func (e *env) blobsOf(repo string) []string {
	return e.digestNames(e.meta.ListRepoBlobs(context.Background(), testRegistry, repo, "", 0))
}

func (e *env) repos() []string {
	return e.names(e.meta.ListRepositories(context.Background(), testRegistry, "", 0))
}

// handler serves arca's /v2/ over env (pull-through and referrers).
func (e *env) handler() *httptest.Server {
	h := registry.New(registry.Options{Blobs: e.blobs, Meta: e.meta, Logger: quietLogger(),
		Registry: func(*http.Request) string { return testRegistry }, Rules: e.rules, Cache: e.cache})
	srv := httptest.NewServer(h)
	e.t.Cleanup(srv.Close)
	return srv
}

func digests(ds ...digest.Digest) []string {
	out := make([]string, 0, len(ds))
	for _, d := range ds {
		out = append(out, d.String())
	}
	sort.Strings(out)
	return slices.Compact(out)
}

func same(t *testing.T, what string, got, want []string) {
	t.Helper()
	g, w := slices.Clone(got), slices.Clone(want)
	sort.Strings(g)
	sort.Strings(w)
	if !slices.Equal(g, w) {
		t.Fatalf("%s:\n got  %d %v\n want %d %v", what, len(g), g, len(w), w)
	}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// image is a seeded image: its manifest descriptor and blobs.
type image struct {
	desc  oci.Descriptor
	blobs []digest.Digest // config and layers
}

// pushImage seeds an image with one random layer of n bytes.
func pushImage(t *testing.T, up *upstreamreg.Registry, repo, tag string, p *oci.Platform, n int) image {
	t.Helper()
	layer := randomBytes(n)
	desc := up.PushImage(t, repo, tag, p, layer)
	return image{desc: desc, blobs: imageBlobs(t, up, repo, desc.Digest)}
}

// imageBlobs reads an upstream manifest's config and layer digests.
func imageBlobs(t *testing.T, up *upstreamreg.Registry, repo string, d digest.Digest) []digest.Digest {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, up.URL()+"/v2/"+repo+"/manifests/"+d.String(), nil)
	req.Header.Set("Accept", oci.MediaTypeOCIManifest)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var m struct {
		Config oci.Descriptor   `json:"config"`
		Layers []oci.Descriptor `json:"layers"`
	}
	if err := jsonDecode(res, &m); err != nil {
		t.Fatal(err)
	}
	out := []digest.Digest{m.Config.Digest}
	for _, l := range m.Layers {
		out = append(out, l.Digest)
	}
	return out
}

// blobGETs counts successful upstream GETs of each blob, from the
// registry's access log.
func blobGETs(up *upstreamreg.Registry) map[string]int {
	n := map[string]int{}
	for _, e := range up.AccessLog() {
		if e.Method == http.MethodGet && e.Status == http.StatusOK && strings.Contains(e.URI, "/blobs/sha256:") {
			n[e.URI[strings.LastIndex(e.URI, "/")+1:]]++
		}
	}
	return n
}

// manifestRequests counts upstream manifest requests by method and
// reference (tag or digest).
func manifestRequests(up *upstreamreg.Registry, method string) map[string]int {
	n := map[string]int{}
	for _, e := range up.AccessLog() {
		if e.Method == method && strings.Contains(e.URI, "/manifests/") {
			n[e.URI[strings.LastIndex(e.URI, "/")+1:]]++
		}
	}
	return n
}

func counter(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	total := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue metric
				}
			}
			total += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return total
}

// toolPath finds a client tool installed by scripts/test.sh.
func toolPath(t *testing.T, name string) string {
	t.Helper()
	if p, ok := toolpath.Find(name); ok {
		return p
	}
	t.Fatalf("%s not found in ARCA_TOOLS_BIN, .tools/bin or PATH: run `bash scripts/test.sh --tools-only`", name)
	return ""
}

func isNotFound(err error) bool { return errors.Is(err, metadata.ErrNotFound) }

func jsonDecode(res *http.Response, v any) error {
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: status %d", res.Request.URL, res.StatusCode)
	}
	return json.NewDecoder(res.Body).Decode(v)
}
