package registry

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"github.com/arcacache/arca/internal/blobstore"
	"github.com/arcacache/arca/internal/metadata"
)

// A manifest stored without its attributes (a row from before they were
// recorded, which the migration leaves undescribed) is described from its
// blobs when first listed, and the result is recorded so that the next
// listing reads no blob; a manifest whose bytes are gone is listed with
// what its row has.
func TestACRManifestsDescribedWhenListed(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	blobs, err := blobstore.NewFS(filepath.Join(dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	meta, err := metadata.OpenSQLite(ctx, filepath.Join(dir, "arca.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { meta.Close() })
	srv := httptest.NewServer(New(Options{Blobs: blobs, Meta: meta, Registry: func(*http.Request) string { return "default" }}))
	t.Cleanup(srv.Close)

	md, m := pushImage(t, srv.URL, "app", "v1")
	stored, err := meta.ManifestInfo(ctx, "default", "app", md)
	if err != nil || !stored.Attrs.Described || stored.Attrs.Architecture != "amd64" || stored.Attrs.ImageSize != int64(len(m))+int64(len(`{"architecture":"amd64","os":"linux"}`))+1000 {
		t.Fatalf("described when pushed: %+v %v", stored.Attrs, err)
	}
	if err := meta.SetManifestAttrs(ctx, "default", "app", md, metadata.ManifestAttrs{}); err != nil {
		t.Fatal(err)
	}
	list := func() acrManifest {
		t.Helper()
		r := do(t, "GET", srv.URL+"/acr/v1/app/_manifests", nil, nil)
		var v struct{ Manifests []acrManifest }
		if r.status != http.StatusOK || json.Unmarshal(r.body, &v) != nil || len(v.Manifests) != 1 {
			t.Fatalf("list: %d %s", r.status, r.body)
		}
		return v.Manifests[0]
	}
	if got := list(); got.Architecture != "amd64" || got.OS != "linux" || got.ConfigMediaType != "application/vnd.oci.image.config.v1+json" || got.ImageSize != stored.Attrs.ImageSize {
		t.Fatalf("listed: %+v", got)
	}
	if again, err := meta.ManifestInfo(ctx, "default", "app", md); err != nil || again.Attrs.Described != true || again.Attrs.Architecture != "amd64" {
		t.Fatalf("not recorded after listing: %+v %v", again.Attrs, err)
	}

	// Bytes gone (an undescribed row): listed from the row, not refused.
	if err := meta.SetManifestAttrs(ctx, "default", "app", md, metadata.ManifestAttrs{}); err != nil {
		t.Fatal(err)
	}
	if err := blobs.Delete(ctx, md); err != nil {
		t.Fatal(err)
	}
	if got := list(); got.Architecture != "" || got.ImageSize != int64(len(m)) {
		t.Fatalf("listed without bytes: %+v", got)
	}
}
