package registry

import (
	"net/http/httptest"
	"strings"
	"testing"
)

// Every route and method the registry answers has an authorization
// decision: only GET /v2/ needs no scope (just a known caller), and the
// repository API asks metadata_read to read and delete to delete.
func TestEveryRouteNeedsAScope(t *testing.T) {
	paths := map[string]string{
		kindBase: "/v2/", kindCatalog: "/v2/_catalog", kindTags: "/v2/a/b/tags/list", kindManifest: "/v2/a/b/manifests/v1",
		kindBlob: "/v2/a/b/blobs/sha256:00", kindUploads: "/v2/a/b/blobs/uploads/", kindUpload: "/v2/a/b/blobs/uploads/u1",
		kindReferrers: "/v2/a/b/referrers/sha256:00", kindACRCatalog: "/acr/v1/_catalog", kindACRRepo: "/acr/v1/a/b",
		kindACRTags: "/acr/v1/a/b/_tags", kindACRTag: "/acr/v1/a/b/_tags/v1", kindACRManifests: "/acr/v1/a/b/_manifests",
		kindACRManifest: "/acr/v1/a/b/_manifests/sha256:00",
	}
	want := map[string]string{
		"GET " + kindACRCatalog:   "registry:catalog:*",
		"GET " + kindACRRepo:      "repository:a/b:metadata_read",
		"DELETE " + kindACRRepo:   "repository:a/b:delete",
		"GET " + kindACRTags:      "repository:a/b:metadata_read",
		"GET " + kindACRTag:       "repository:a/b:metadata_read",
		"DELETE " + kindACRTag:    "repository:a/b:delete",
		"GET " + kindACRManifests: "repository:a/b:metadata_read",
		"GET " + kindACRManifest:  "repository:a/b:metadata_read",
		"GET " + kindCatalog:      "registry:catalog:*",
		"DELETE " + kindManifest:  "repository:a/b:delete",
		"PUT " + kindManifest:     "repository:a/b:pull,push",
		"GET " + kindManifest:     "repository:a/b:pull",
		"GET " + kindTags:         "repository:a/b:pull",
		"POST " + kindUploads:     "repository:a/b:pull,push",
		"PATCH " + kindUpload:     "repository:a/b:pull,push",
		"GET " + kindReferrers:    "repository:a/b:pull",
		"DELETE " + kindBlob:      "repository:a/b:delete",
		"HEAD " + kindBlob:        "repository:a/b:pull",
		"GET " + kindBase:         "",
		"HEAD " + kindBase:        "",
	}
	for kind, methods := range allowed {
		p, ok := paths[kind]
		if !ok {
			t.Errorf("route kind %s has no test path", kind)
			continue
		}
		if got := parseRoute(p).kind; got != kind {
			t.Errorf("%s parses as %s, want %s", p, got, kind)
		}
		for _, m := range methods {
			r := httptest.NewRequest(m, p, nil)
			var got []string
			for _, s := range need(parseRoute(p), r) {
				got = append(got, s.String())
			}
			if kind != kindBase && len(got) == 0 {
				t.Errorf("%s %s needs no scope", m, p)
			}
			if w, ok := want[m+" "+kind]; ok && strings.Join(got, " ") != w {
				t.Errorf("%s %s needs %q, want %q", m, p, got, w)
			}
		}
	}
	for _, p := range []string{"/acr/v1/", "/acr/v1/a/_tags/", "/acr/v1/a/_bogus", "/acr/v1/_catalog/x/_other"} {
		if k := parseRoute(p).kind; k != kindUnknown {
			t.Errorf("%s parses as %s, want unknown", p, k)
		}
	}
}
