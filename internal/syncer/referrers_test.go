package syncer_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/arcacache/arca/internal/metadata"
	"github.com/arcacache/arca/internal/oci"
	"github.com/arcacache/arca/internal/rules"
	"github.com/arcacache/arca/internal/syncer"
	"github.com/arcacache/arca/internal/testutil/upstreamreg"
)

const (
	notaryType = "application/vnd.cncf.notary.signature"
	spdxType   = "application/spdx+json"
)

// orasAttach attaches a file to ref with the real oras CLI (distribution
// 2.8 has no referrers API, so oras writes the tag-schema fallback index)
// and returns the referrer's digest and the blobs it pushed.
func orasAttach(t *testing.T, ref, artifactType, fileMediaType string, content []byte) (digest.Digest, []digest.Digest) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "payload"), content, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(toolPath(t, "oras"), "attach", "--plain-http", "--artifact-type", artifactType,
		"--format", "go-template", "--template", "{{.digest}}", ref, "payload:"+fileMediaType)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "HOME="+dir, "DOCKER_CONFIG="+filepath.Join(dir, ".docker"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("oras attach %s: %v\n%s", ref, err, out)
	}
	d, err := digest.Parse(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("oras attach printed %q: %v", out, err)
	}
	// oras's artifact manifest: the empty config and our one layer.
	return d, []digest.Digest{digest.FromBytes([]byte("{}")), digest.FromBytes(content)}
}

// TestReferrersAndArtifactTypes syncs an image with a Notary signature and
// an SBOM attached by oras, under several artifact-type filters, and checks
// exactly what arca holds and that arca's referrers API serves it with the
// upstream gone.
func TestReferrersAndArtifactTypes(t *testing.T) {
	up := upstreamreg.Start(t, upstreamreg.Options{})
	img := pushImage(t, up, "signed", "v1", &oci.Platform{OS: "linux", Architecture: "amd64"}, 2048)
	sig, sigBlobs := orasAttach(t, up.Host+"/signed:v1", notaryType, "application/jose+json", []byte(`{"payload":"notary signature"}`))
	sbom, sbomBlobs := orasAttach(t, up.Host+"/signed:v1", spdxType, spdxType, []byte(`{"spdxVersion":"SPDX-2.3"}`))
	e := newEnv(t, up.Host)
	s, _ := e.newSyncer(syncer.Options{})

	// The dry run of the README's rule: the upstream lists v1 and oras's
	// tag-schema fallback index tag; only v1 is a tag to sync.
	est, err := s.Estimate(context.Background(), testRegistry, rules.Rule{Name: "estimate-readme", Source: up.Host + "/signed",
		Target: "estimated", SyncMode: rules.ActiveSync, SyncReferrers: "Enabled",
		Filters: rules.Filters{Platforms: []string{"linux/amd64", "linux/arm64"},
			ArtifactTypes: &rules.KindFilter{Type: "include", Values: []string{"images", "notary-project-signature"}}}})
	if err != nil || est.TotalCount != 2 || est.FilteredCount != 1 || len(est.Results) != 1 || est.Results[0].Name != "v1" {
		t.Fatalf("estimate: %+v %v", est, err)
	}

	imageAndSig := digests(img.desc.Digest, sig)
	cases := []struct {
		name      string
		referrers string
		filter    *rules.KindFilter
		manifests []string
		blobs     []digest.Digest
		tags      []string
	}{
		// The acrcache README's own example.
		{"readme-example", "Enabled", &rules.KindFilter{Type: "include", Values: []string{"images", "notary-project-signature"}},
			imageAndSig, append(append([]digest.Digest{}, img.blobs...), sigBlobs...), []string{"v1"}},
		{"exclude-sbom", "Enabled", &rules.KindFilter{Type: "exclude", Values: []string{"sbom"}},
			imageAndSig, append(append([]digest.Digest{}, img.blobs...), sigBlobs...), []string{"v1"}},
		{"full-media-types", "Enabled", &rules.KindFilter{Type: "include", Values: []string{"application/vnd.oci.image.config.v1+json", spdxType}},
			digests(img.desc.Digest, sbom), append(append([]digest.Digest{}, img.blobs...), sbomBlobs...), []string{"v1"}},
		{"all-referrers", "Enabled", nil,
			digests(img.desc.Digest, sig, sbom), append(append(append([]digest.Digest{}, img.blobs...), sigBlobs...), sbomBlobs...), []string{"v1"}},
		{"referrers-disabled", "Disabled", nil, digests(img.desc.Digest), img.blobs, []string{"v1"}},
		// Signatures only: the tagged image is not one, so nothing is held.
		{"signatures-only", "Enabled", &rules.KindFilter{Type: "include", Values: []string{"notary-project-signature"}},
			[]string{}, nil, []string{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e.putRule(rules.Rule{Name: "ref-" + c.name, Source: up.Host + "/signed", Target: c.name, SyncReferrers: c.referrers,
				Filters: rules.Filters{ArtifactTypes: c.filter}})
			st := e.syncRule(s, "ref-"+c.name)
			if st.Result != syncer.ResultSucceeded {
				t.Fatalf("status: %+v", st)
			}
			same(t, "tags", e.tags(c.name), c.tags)
			same(t, "manifests", e.manifests(c.name), c.manifests)
			same(t, "blobs", e.blobsOf(c.name), digests(c.blobs...))
		})
	}

	// Unchanged image, new signature: the next run picks it up.
	sig2, _ := orasAttach(t, up.Host+"/signed:v1", notaryType, "application/jose+json", []byte(`{"payload":"second signature"}`))
	if st := e.syncRule(s, "ref-readme-example"); st.Result != syncer.ResultSucceeded {
		t.Fatalf("status: %+v", st)
	}
	same(t, "manifests after a new signature", e.manifests("readme-example"), digests(img.desc.Digest, sig, sig2))

	// arca's referrers API serves what was synced, with the upstream gone.
	srv := e.handler()
	up.Stop()
	body, _ := get(t, srv.URL+"/v2/readme-example/referrers/"+img.desc.Digest.String(), oci.MediaTypeOCIIndex)
	var idx oci.Index
	if err := json.Unmarshal(body, &idx); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range idx.Manifests {
		if m.ArtifactType != notaryType {
			t.Errorf("referrer %s has artifactType %q", m.Digest, m.ArtifactType)
		}
		got = append(got, m.Digest.String())
	}
	same(t, "referrers served", got, digests(sig, sig2))
}

// TestSyncTag syncs one tag on demand and refuses tags outside the filter.
func TestSyncTag(t *testing.T) {
	up := upstreamreg.Start(t, upstreamreg.Options{})
	v1 := pushImage(t, up, "app", "v1", &oci.Platform{OS: "linux", Architecture: "amd64"}, 3000)
	pushImage(t, up, "app", "v2", &oci.Platform{OS: "linux", Architecture: "amd64"}, 3001)
	pushImage(t, up, "app", "latest", &oci.Platform{OS: "linux", Architecture: "amd64"}, 3002)
	e := newEnv(t, up.Host)
	s, _ := e.newSyncer(syncer.Options{})
	ctx := context.Background()
	e.putRule(rules.Rule{Name: "app-rule", Source: up.Host + "/app", Target: "app", Filters: rules.Filters{Tags: "Tags | where Name startswith 'v'"}})
	e.putRule(rules.Rule{Name: "passive-rule", Source: up.Host + "/app", Target: "passive", SyncMode: rules.PassiveSync})

	_, err := s.SyncTag(ctx, testRegistry, "app-rule", "latest")
	var re *rules.Error
	if !errors.As(err, &re) || re.Code != rules.CodeInvalidSync || !strings.Contains(re.Message, "outside the tag filter") {
		t.Fatalf("tag outside the filter: %v", err)
	}
	if _, err := s.SyncTag(ctx, testRegistry, "passive-rule", "v1"); !errors.As(err, &re) || !strings.Contains(re.Message, "ActiveSync") {
		t.Fatalf("passive rule: %v", err)
	}
	if _, err := s.SyncTag(ctx, testRegistry, "no-such-rule", "v1"); !isNotFound(err) {
		t.Fatalf("missing rule: %v", err)
	}
	if _, err := s.SyncTag(ctx, testRegistry, "app-rule", "v9"); err == nil {
		t.Fatal("a tag missing upstream was reported synced")
	}
	same(t, "tags after refusals", e.tags("app"), []string{})

	rep, err := s.SyncTag(ctx, testRegistry, "app-rule", "v1")
	if err != nil {
		t.Fatal(err)
	}
	if rep.Result != syncer.OutcomeSynced || rep.Digest != v1.desc.Digest || rep.Manifests != 1 || rep.Blobs != 2 || rep.Bytes < 3000 {
		t.Fatalf("report: %+v", rep)
	}
	same(t, "tags", e.tags("app"), []string{"v1"})
	same(t, "manifests", e.manifests("app"), digests(v1.desc.Digest))
	rep, err = s.SyncTag(ctx, testRegistry, "app-rule", "v1")
	if err != nil || rep.Result != syncer.OutcomeUnchanged || rep.Blobs != 0 {
		t.Fatalf("second sync: %+v %v", rep, err)
	}
}

// runLog records the runs a Syncer reports finished (as stats.Recorder).
type runLog struct {
	mu   sync.Mutex
	runs []string // "rule result"
}

func (l *runLog) SyncRun(_, rule, result string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.runs = append(l.runs, rule+" "+result)
}

// A one-tag sync (Sync now, `arca cache sync --tag`) is a run of its rule
// like a scheduled one: counted by result and shown in the rule's
// artifactSyncStatus; the run record the schedule reads stays untouched.
func TestSyncTagCountsAsRun(t *testing.T) {
	up := upstreamreg.Start(t, upstreamreg.Options{})
	pushImage(t, up, "app", "v1", &oci.Platform{OS: "linux", Architecture: "amd64"}, 3000)
	e := newEnv(t, up.Host)
	runs := &runLog{}
	s, m := e.newSyncer(syncer.Options{Runs: runs})
	ctx := context.Background()
	e.putRule(rules.Rule{Name: "app-rule", Source: up.Host + "/app", Target: "app"})
	status := func() *rules.SyncStatus {
		t.Helper()
		r, err := e.meta.GetCacheRule(ctx, testRegistry, "app-rule")
		if err != nil {
			t.Fatal(err)
		}
		return r.SyncStatus
	}
	for _, tc := range []struct {
		tag, result string
	}{
		{"v1", syncer.ResultSucceeded},
		{"v9", syncer.ResultFailed}, // not in the upstream
	} {
		before := time.Now().UTC()
		_, err := s.SyncTag(ctx, testRegistry, "app-rule", tc.tag)
		if (err == nil) != (tc.result == syncer.ResultSucceeded) {
			t.Fatalf("sync %s: %v", tc.tag, err)
		}
		if got := counter(t, m, "arca_sync_runs_total", "result", tc.result); got != 1 {
			t.Errorf("sync %s: arca_sync_runs_total{result=%s} = %v, want 1", tc.tag, tc.result, got)
		}
		st := status()
		if st == nil || st.Status != tc.result || st.LastSyncTime.Before(before.Truncate(time.Microsecond)) || (tc.result == syncer.ResultFailed) != (st.LastError != "") {
			t.Errorf("sync %s: artifactSyncStatus %+v, want %s from this run", tc.tag, st, tc.result)
		}
	}
	runs.mu.Lock()
	same(t, "runs recorded", runs.runs, []string{"app-rule " + syncer.ResultSucceeded, "app-rule " + syncer.ResultFailed})
	runs.mu.Unlock()
	if _, err := e.meta.GetSyncRun(ctx, testRegistry, "app-rule"); !errors.Is(err, metadata.ErrNotFound) {
		t.Errorf("a one-tag sync wrote the rule's run record (the schedule's state): %v", err)
	}
}
