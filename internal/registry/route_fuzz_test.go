package registry

import (
	"strings"
	"testing"

	"github.com/arcacache/arca/internal/oci"
)

func FuzzParseRoute(f *testing.F) {
	for _, p := range []string{"/v2/", "/v2/_catalog", "/v2/a/b/c/manifests/latest", "/v2/x/blobs/uploads/", "/v2/x/blobs/uploads/abc-123",
		"/v2/x/blobs/sha256:abc", "/v2/x/tags/list", "/v2/x/referrers/sha256:abc", "/v2/../../etc/blobs/x", "/v2/a%2Fb/manifests/x", "/v2//manifests/x",
		"/acr/v1/_catalog", "/acr/v1/a/b/_tags/v1", "/acr/v1/a/_manifests", "/acr/v1/a/_manifests/sha256:abc", "/acr/v1/../x/_tags", "/acr/v1/a%2F../_tags"} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, p string) {
		if !strings.HasPrefix(p, "/v2/") && !strings.HasPrefix(p, "/acr/v1/") {
			return
		}
		rt := parseRoute(p)
		switch rt.kind {
		case kindManifest, kindBlob, kindTags, kindReferrers, kindUploads, kindUpload, kindACRRepo, kindACRTags, kindACRTag, kindACRManifests, kindACRManifest:
			// Whatever the route, a name that passes validation has no
			// path-traversal element.
			if oci.ValidRepository(rt.repo) {
				for _, e := range strings.Split(rt.repo, "/") {
					if e == "" || e == "." || e == ".." {
						t.Fatalf("valid repository %q from %q has element %q", rt.repo, p, e)
					}
				}
			}
		}
	})
}
