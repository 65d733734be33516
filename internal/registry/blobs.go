package registry

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/arcacache/arca/internal/blobstore"
	"github.com/arcacache/arca/internal/errcode"
	"github.com/arcacache/arca/internal/metadata"
)

func parseDigest(s string) (digest.Digest, error) {
	d, err := digest.Parse(s)
	if err != nil {
		return "", errcode.New(errcode.DigestInvalid, fmt.Sprintf("invalid digest %q", s))
	}
	return d, nil
}

func (h *Handler) blob(w http.ResponseWriter, r *http.Request, reg, repo, ref string) error {
	d, err := parseDigest(ref)
	if err != nil {
		return err
	}
	if r.Method == http.MethodDelete {
		err := h.meta.UnlinkBlob(r.Context(), reg, repo, d)
		if errors.Is(err, metadata.ErrNotFound) {
			return errcode.New(errcode.BlobUnknown, fmt.Sprintf("blob %s is not found in %s", d, repo))
		}
		if err != nil {
			return err
		}
		w.WriteHeader(http.StatusAccepted)
		return nil
	}
	size, err := h.meta.BlobSize(r.Context(), reg, repo, d)
	if errors.Is(err, metadata.ErrNotFound) {
		return errcode.New(errcode.BlobUnknown, fmt.Sprintf("blob %s is not found in %s", d, repo))
	}
	if err != nil {
		return err
	}
	return h.serveBlob(w, r, d, size)
}

// serveBlob sends a committed blob, honouring Range. The file goes to the
// socket with sendfile; ServeContent checks the size it is told against the
// one it seeks to.
func (h *Handler) serveBlob(w http.ResponseWriter, r *http.Request, d digest.Digest, size int64) error {
	f, err := h.blobs.Open(r.Context(), d)
	if errors.Is(err, blobstore.ErrNotFound) {
		return errcode.New(errcode.BlobUnknown, fmt.Sprintf("blob %s content is missing", d))
	}
	if err != nil {
		return err
	}
	defer f.Close()
	hd := w.Header()
	hd.Set("Docker-Content-Digest", d.String())
	hd.Set("Content-Type", "application/octet-stream")
	hd.Set("ETag", `"`+d.String()+`"`)
	hd.Set("Cache-Control", "max-age=31536000")
	if r.Method == http.MethodHead {
		hd.Set("Content-Length", strconv.FormatInt(size, 10))
		hd.Set("Accept-Ranges", "bytes")
		w.WriteHeader(http.StatusOK)
		return nil
	}
	http.ServeContent(w, r, "", time.Time{}, f)
	return nil
}
