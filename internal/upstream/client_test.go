package upstream_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/arcacache/arca/internal/oci"
	"github.com/arcacache/arca/internal/testutil/upstreamreg"
	"github.com/arcacache/arca/internal/upstream"
)

// Every test here runs against Debian's docker-registry (distribution 2.8).

func TestPullEachAuthMode(t *testing.T) {
	for _, mode := range []upstreamreg.Options{
		{Auth: upstreamreg.None},
		{Auth: upstreamreg.Htpasswd},
		{Auth: upstreamreg.Token, Username: "alice", Password: "s3cret"},
	} {
		t.Run(mode.Auth.String(), func(t *testing.T) {
			reg := upstreamreg.Start(t, mode)
			testPull(t, reg)
		})
	}
}

func testPull(t *testing.T, reg *upstreamreg.Registry) {
	ctx := t.Context()
	l1, l2 := randomBytes(t, 100<<10), randomBytes(t, 1<<20)
	amd := reg.PushImage(t, "team/app", "", &oci.Platform{OS: "linux", Architecture: "amd64"}, l1, l2)
	arm := reg.PushImage(t, "team/app", "", &oci.Platform{OS: "linux", Architecture: "arm64"}, l1)
	idx := reg.PushIndex(t, "team/app", "v1", amd, arm)
	var calls atomic.Int64
	c, _ := newClient(t, upstream.Options{}, reg.Host)
	repo := credsFor(reg, reg.Host, "team/app", &calls)

	d, err := c.HeadManifest(ctx, repo, "v1")
	if err != nil || d != (upstream.Descriptor{MediaType: oci.MediaTypeOCIIndex, Digest: idx.Digest, Size: idx.Size}) {
		t.Fatalf("HeadManifest(v1) = %+v, %v; want the index %s", d, err, idx.Digest)
	}
	m, err := c.GetManifest(ctx, repo, "v1")
	if err != nil || m.Digest != idx.Digest || m.MediaType != oci.MediaTypeOCIIndex || digest.FromBytes(m.Body) != idx.Digest {
		t.Fatalf("GetManifest(v1) = %v, %v", m, err)
	}
	m, err = c.GetManifest(ctx, repo, amd.Digest.String())
	if err != nil || m.Digest != amd.Digest || m.MediaType != oci.MediaTypeOCIManifest || int64(len(m.Body)) != amd.Size {
		t.Fatalf("GetManifest(by digest) = %v, %v", m, err)
	}
	if d, err := c.HeadManifest(ctx, repo, arm.Digest.String()); err != nil || d.Digest != arm.Digest || d.Size != arm.Size {
		t.Fatalf("HeadManifest(by digest) = %+v, %v", d, err)
	}
	readBlob(t, c, repo, l1)
	readBlob(t, c, repo, l2)

	_, err = c.GetManifest(ctx, repo, "nope")
	if e := asError(t, err); !upstream.IsNotFound(err) || e.Code != "MANIFEST_UNKNOWN" {
		t.Errorf("GetManifest(nope) = %v, want 404 MANIFEST_UNKNOWN", err)
	}
	if _, _, err := c.GetBlob(ctx, repo, digest.FromString("absent")); !upstream.IsNotFound(err) {
		t.Errorf("GetBlob(absent) = %v, want 404", err)
	}
	if _, err := c.HeadManifest(ctx, credsFor(reg, reg.Host, "no/such", nil), "v1"); !upstream.IsNotFound(err) {
		t.Errorf("HeadManifest(no/such) = %v, want 404", err)
	}
	if tags, _ := allTags(t, c, repo); fmt.Sprint(tags) != "[v1]" {
		t.Errorf("Tags = %v, want [v1]", tags)
	}
	if reg.Username != "" && calls.Load() == 0 {
		t.Error("credentials were never resolved")
	}
	if reg.TokenRealm() != "" {
		// One token for team/app (reused by every request above), one for no/such.
		if n := reg.TokenRequests(); n != 2 {
			t.Errorf("token requests = %d, want 2: %+v", n, reg.TokenLog())
		}
	}
}

func TestTokenCacheReuse(t *testing.T) {
	reg := upstreamreg.Start(t, upstreamreg.Options{Auth: upstreamreg.Token, Username: "alice", Password: "pw"})
	layers := [][]byte{randomBytes(t, 10<<10), randomBytes(t, 20<<10), randomBytes(t, 30<<10)}
	reg.Push(t, "lib/app", "v1", layers...)
	c, _ := newClient(t, upstream.Options{}, reg.Host)
	repo := credsFor(reg, reg.Host, "lib/app", nil)
	pull := func(t *testing.T, repo upstream.Repo) {
		if _, err := c.GetManifest(t.Context(), repo, "v1"); err != nil {
			t.Fatal(err)
		}
		for _, l := range layers {
			readBlob(t, c, repo, l)
		}
	}
	for range 10 {
		pull(t, repo)
	}
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() { pull(t, repo) })
	}
	wg.Wait()
	if n := reg.TokenRequests(); n != 1 {
		t.Errorf("26 pulls (104 requests) fetched %d tokens, want 1", n)
	}
	if n := countStatus(reg.AccessLog(), 401, "/v2/lib/app/"); n != 1 {
		t.Errorf("registry answered 401 %d times, want once (the first challenge): %+v", n, reg.AccessLog())
	}

	// Another credential key is another partition: its own token.
	other := repo
	other.CredKey = "other-set"
	pull(t, other)
	if n := reg.TokenRequests(); n != 2 {
		t.Errorf("after a pull with another credential key: %d token requests, want 2", n)
	}
}

func TestTokenExpiryIsHonoured(t *testing.T) {
	// distribution accepts a token up to 60s past its exp (leeway), so only
	// the client's own expiry handling can cause the second fetch here.
	// A 4s token is used for 3.6s: time for the three HEADs below even on
	// a loaded machine.
	reg := upstreamreg.Start(t, upstreamreg.Options{Auth: upstreamreg.Token, Username: "alice", Password: "pw", TokenTTL: 4 * time.Second})
	reg.Push(t, "app", "v1", []byte("layer"))
	c, _ := newClient(t, upstream.Options{}, reg.Host)
	repo := credsFor(reg, reg.Host, "app", nil)
	for range 3 {
		if _, err := c.HeadManifest(t.Context(), repo, "v1"); err != nil {
			t.Fatal(err)
		}
	}
	if n := reg.TokenRequests(); n != 1 {
		t.Fatalf("token requests before expiry = %d, want 1", n)
	}
	time.Sleep(4100 * time.Millisecond)
	if _, err := c.HeadManifest(t.Context(), repo, "v1"); err != nil {
		t.Fatal(err)
	}
	if n := reg.TokenRequests(); n != 2 {
		t.Fatalf("token requests after expiry = %d, want 2 (a fresh token)", n)
	}
}

func TestTokenRejectedAfterKeyRotationIsRefetched(t *testing.T) {
	reg := upstreamreg.Start(t, upstreamreg.Options{Auth: upstreamreg.Token, Username: "alice", Password: "pw"})
	reg.Push(t, "app", "v1", []byte("layer"))
	c, _ := newClient(t, upstream.Options{}, reg.Host)
	repo := credsFor(reg, reg.Host, "app", nil)
	if _, err := c.GetManifest(t.Context(), repo, "v1"); err != nil {
		t.Fatal(err)
	}
	reg.RotateTokenKey(t) // the cached token is now rejected with 401
	if _, err := c.GetManifest(t.Context(), repo, "v1"); err != nil {
		t.Fatalf("after key rotation: %v", err)
	}
	if n := reg.TokenRequests(); n != 2 {
		t.Errorf("token requests = %d, want 2", n)
	}
}

func TestBlobRedirectDropsAuthorization(t *testing.T) {
	for _, mode := range []upstreamreg.Options{{Auth: upstreamreg.Htpasswd}, {Auth: upstreamreg.Token, Username: "u", Password: "p"}} {
		t.Run(mode.Auth.String(), func(t *testing.T) {
			reg := upstreamreg.Start(t, mode)
			layer := randomBytes(t, 300<<10)
			reg.Push(t, "app", "v1", layer)
			proxy := upstreamreg.NewFaultProxy(t, reg)
			proxy.RedirectBlobs(true)
			c, _ := newClient(t, upstream.Options{}, proxy.Host())
			readBlob(t, c, credsFor(reg, proxy.Host(), "app", nil), layer)
			sr := proxy.StorageRequests()
			if len(sr) != 1 || sr[0].Authorization != "" {
				t.Fatalf("blob storage got %+v, want one request without Authorization", sr)
			}
		})
	}
}

func TestReferrersThroughFallbackTag(t *testing.T) {
	reg := upstreamreg.Start(t, upstreamreg.Options{Auth: upstreamreg.Token, Username: "u", Password: "p"})
	img := reg.PushImage(t, "signed", "", &oci.Platform{OS: "linux", Architecture: "amd64"}, []byte("l"))
	idx := reg.PushIndex(t, "signed", "v1", img)
	sig := reg.PushReferrer(t, "signed", idx, "application/vnd.dev.cosign.artifact.sig.v1+json", map[string]string{"dev.cosignproject.cosign/signature": "MEUC"})
	sbom := reg.PushReferrer(t, "signed", idx, "application/spdx+json", nil)
	c, _ := newClient(t, upstream.Options{}, reg.Host)
	repo := credsFor(reg, reg.Host, "signed", nil)
	ctx := t.Context()

	all, err := c.Referrers(ctx, repo, idx.Digest, "")
	if err != nil || len(all) != 2 || all[0].Digest != sig.Digest || all[1].Digest != sbom.Digest ||
		all[0].Annotations["dev.cosignproject.cosign/signature"] != "MEUC" {
		t.Fatalf("Referrers(all) = %+v, %v", all, err)
	}
	only, err := c.Referrers(ctx, repo, idx.Digest, "application/spdx+json")
	if err != nil || len(only) != 1 || only[0].Digest != sbom.Digest {
		t.Fatalf("Referrers(spdx) = %+v, %v", only, err)
	}
	none, err := c.Referrers(ctx, repo, img.Digest, "")
	if err != nil || none == nil || len(none) != 0 {
		t.Fatalf("Referrers(no referrers) = %#v, %v; want an empty list", none, err)
	}
	if n := reg.Requests("GET", "/v2/signed/referrers/"); n != 3 {
		t.Errorf("registry saw %d referrers API calls, want 3 (one per call, each a 404)", n)
	}
	if n := reg.Requests("GET", "/manifests/"+oci.ReferrersTag(idx.Digest)); n < 2 {
		t.Errorf("registry saw %d fallback tag GETs, want 2", n)
	}
}

func TestTags(t *testing.T) {
	// distribution 2.8 ignores n and never paginates tags/list; v3 answers
	// n tags at a time with a Link rel="next". The client handles both.
	t.Run("distribution-2.8", func(t *testing.T) {
		testTags(t, upstreamreg.Options{}, 10, 4, "[10]", "[10]", 2)
	})
	t.Run("distribution-v3", func(t *testing.T) {
		testTags(t, upstreamreg.Options{Binary: upstreamreg.V3Binary(t)}, 1005, 400, "[400 400 205]", "[1000 5]", 5)
	})
}

// testTags lists count tags with page size n, then with the default 1000.
func testTags(t *testing.T, o upstreamreg.Options, count, n int, pagesN, pages1000 string, gets int) {
	reg := upstreamreg.Start(t, o)
	d := reg.Push(t, "many", "t0000", []byte("l"))
	var tags []string
	for i := 1; i < count; i++ {
		tags = append(tags, fmt.Sprintf("t%04d", i))
	}
	reg.Tag(t, "many", d, tags...)
	repo := upstream.Repo{Host: reg.Host, Path: "many"}
	last := fmt.Sprintf("t%04d", count-1)

	c, _ := newClient(t, upstream.Options{TagPageSize: n}, reg.Host)
	tags, pages := allTags(t, c, repo)
	if len(tags) != count || tags[0] != "t0000" || tags[count-1] != last || fmt.Sprint(pages) != pagesN {
		t.Fatalf("n=%d: %d tags in pages %v, want %d in pages %s", n, len(tags), pages, count, pagesN)
	}
	c, _ = newClient(t, upstream.Options{}, reg.Host) // default n=1000
	tags, pages = allTags(t, c, repo)
	if len(tags) != count || fmt.Sprint(pages) != pages1000 {
		t.Fatalf("n=1000: %d tags in pages %v, want pages %s", len(tags), pages, pages1000)
	}
	if got := reg.Requests("GET", "/v2/many/tags/list"); got != gets {
		t.Errorf("registry saw %d tags/list GETs, want %d", got, gets)
	}
	stop := errors.New("enough")
	if err := c.Tags(t.Context(), repo, func([]string) error { return stop }); err != stop {
		t.Errorf("Tags returned %v, want the callback's error", err)
	}
}

func TestCheckLogin(t *testing.T) {
	ctx := t.Context()
	good := func(u, p string) upstream.Credentials {
		return func(context.Context) (string, string, error) { return u, p, nil }
	}
	failing := func(context.Context) (string, string, error) { return "", "", errors.New("vault sealed") }

	open := upstreamreg.Start(t, upstreamreg.Options{})
	basic := upstreamreg.Start(t, upstreamreg.Options{Auth: upstreamreg.Htpasswd})
	token := upstreamreg.Start(t, upstreamreg.Options{Auth: upstreamreg.Token, Username: "alice", Password: "pw"})
	c, _ := newClient(t, upstream.Options{}, open.Host, basic.Host, token.Host)

	if err := c.CheckLogin(ctx, open.Host, nil); err != nil {
		t.Errorf("anonymous on an open registry: %v", err)
	}
	if err := c.CheckLogin(ctx, basic.Host, good(basic.Username, basic.Password)); err != nil {
		t.Errorf("htpasswd, right password: %v", err)
	}
	if err := c.CheckLogin(ctx, token.Host, good("alice", "pw")); err != nil {
		t.Errorf("token, right password: %v", err)
	}
	for name, tc := range map[string]struct {
		host  string
		creds upstream.Credentials
		want  string
	}{
		"htpasswd wrong password": {basic.Host, good(basic.Username, "nope"), "rejected the username or password"},
		"htpasswd anonymous":      {basic.Host, nil, "requires credentials"},
		"token wrong password":    {token.Host, good("alice", "nope"), "rejected the credentials"},
		"token unknown user":      {token.Host, good("mallory", "pw"), "rejected the credentials"},
	} {
		err := c.CheckLogin(ctx, tc.host, tc.creds)
		if err == nil {
			t.Errorf("%s: login succeeded", name)
			continue
		}
		if e := asError(t, err); e.StatusCode != 401 || !strings.Contains(err.Error(), tc.want) || upstream.IsUnavailable(err) {
			t.Errorf("%s: %v (status %d), want a 401 saying %q", name, err, e.StatusCode, tc.want)
		}
	}
	if err := c.CheckLogin(ctx, basic.Host, failing); err == nil || !strings.Contains(err.Error(), "vault sealed") {
		t.Errorf("credential resolution failure: %v", err)
	}
	basic.Stop()
	if err := c.CheckLogin(ctx, basic.Host, good("a", "b")); !upstream.IsUnavailable(err) {
		t.Errorf("registry down: %v, want unavailable", err)
	}
}

func TestHTTPSUnlessInsecure(t *testing.T) {
	reg := upstreamreg.Start(t, upstreamreg.Options{})
	reg.Push(t, "app", "v1", []byte("l"))
	c, _ := newClient(t, upstream.Options{})
	start := time.Now()
	_, err := c.GetManifest(t.Context(), upstream.Repo{Host: reg.Host, Path: "app"}, "v1")
	if err == nil || !strings.Contains(err.Error(), "--insecure-upstream "+reg.Host) {
		t.Fatalf("HTTPS to a plain-HTTP registry: %v, want a hint about --insecure-upstream", err)
	}
	// Retries here back off 10ms, 20ms, 40ms: the bound catches a hang, not
	// a retry (a loaded machine stretches one attempt past such a bound).
	if time.Since(start) > 10*time.Second {
		t.Errorf("took %s: a TLS mismatch must not be retried", time.Since(start))
	}
}

func TestCredentialsResolvedAtUse(t *testing.T) {
	for _, mode := range []upstreamreg.Options{{Auth: upstreamreg.Htpasswd}, {Auth: upstreamreg.Token, Username: "u", Password: "right"}} {
		t.Run(mode.Auth.String(), func(t *testing.T) {
			reg := upstreamreg.Start(t, mode)
			reg.Push(t, "app", "v1", []byte("l"))
			var password atomic.Value
			password.Store("stale")
			var calls atomic.Int64
			repo := upstream.Repo{Host: reg.Host, Path: "app", CredKey: "rotating", Creds: func(context.Context) (string, string, error) {
				calls.Add(1)
				return reg.Username, password.Load().(string), nil
			}}
			c, _ := newClient(t, upstream.Options{}, reg.Host)
			if calls.Load() != 0 {
				t.Fatal("credentials resolved before use")
			}
			_, err := c.GetManifest(t.Context(), repo, "v1")
			if e := asError(t, err); e.StatusCode != 401 || upstream.IsUnavailable(err) {
				t.Fatalf("stale password: %v, want a 401", err)
			}
			password.Store(reg.Password) // the secret was rotated; no client rebuild
			if _, err := c.GetManifest(t.Context(), repo, "v1"); err != nil {
				t.Fatalf("after rotation: %v", err)
			}
			if calls.Load() < 2 {
				t.Errorf("credentials resolved %d times, want a fresh resolution after the 401", calls.Load())
			}
		})
	}
}
