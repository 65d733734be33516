package registry

import (
	"errors"
	"fmt"
	"io"
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
	if h.pulls != nil && r.Method == http.MethodGet {
		h.pulls.Blob(reg, repo, d)
	}
	return h.serveBlob(w, r, d, size)
}

// mountable returns the size of blob d if a cross-repository mount may
// take it from repository from: only what the same request could pull
// from there. For a rule-backed repository that is the cache's rule (a
// blob it links, or one it may link: see cache.Allowed); for our own
// repositories, a blob linked to it. Access control of the request to
// from belongs here too. metadata.ErrNotFound: not mountable.
func (h *Handler) mountable(r *http.Request, reg, from string, d digest.Digest) (int64, error) {
	if h.rules != nil && h.cache != nil {
		// from names one of our repositories: no mirror mapping.
		t, ok, err := h.rules.Resolve(r.Context(), reg, from, "")
		if err != nil {
			return 0, err
		}
		if ok {
			size, ok, err := h.cache.Allowed(r.Context(), reg, t, d)
			if err == nil && !ok {
				err = metadata.ErrNotFound
			}
			return size, err
		}
	}
	return h.meta.BlobSize(r.Context(), reg, from, d)
}

// serveBlob sends a committed blob. The body goes out with sendfile (the
// store's *os.File reaches net/http's ReadFrom): measured with `make bench`
// it beats read/write copies on this loopback (BlobDownload plainfile vs
// plainfile-copy). Range and conditional requests go through
// http.ServeContent, which uses sendfile too.
//
// With BlobRedirect set and a backend that presigns (S3), a GET is sent
// to the backend instead (307; the client's Range goes there too).
func (h *Handler) serveBlob(w http.ResponseWriter, r *http.Request, d digest.Digest, size int64) error {
	if rd, ok := h.blobs.(blobstore.Redirector); ok && h.redirect > 0 && r.Method == http.MethodGet {
		u, err := rd.RedirectURL(r.Context(), d, h.redirect)
		if err != nil {
			return err
		}
		w.Header().Set("Docker-Content-Digest", d.String())
		http.Redirect(w, r, u, http.StatusTemporaryRedirect)
		return nil
	}
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
	hd.Set("Accept-Ranges", "bytes")
	if r.Method == http.MethodHead {
		hd.Set("Content-Length", strconv.FormatInt(size, 10))
		w.WriteHeader(http.StatusOK)
		return nil
	}
	if r.Header.Get("Range") != "" || r.Header.Get("If-None-Match") != "" || r.Header.Get("If-Range") != "" {
		http.ServeContent(w, r, "", time.Time{}, f)
		return nil
	}
	hd.Set("Content-Length", strconv.FormatInt(size, 10))
	w.WriteHeader(http.StatusOK)
	n, err := io.Copy(w, io.LimitReader(f, size+1))
	if err == nil && n != size {
		err = fmt.Errorf("blob %s holds %d bytes, %d recorded", d, n, size)
	}
	if err != nil && r.Context().Err() == nil {
		// A short body must fail the client's transfer, never look whole.
		h.log.Error("blob send failed", "digest", d, "err", err)
		panic(http.ErrAbortHandler)
	}
	return nil
}
