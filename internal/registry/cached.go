package registry

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/arcacache/arca/internal/cache"
	"github.com/arcacache/arca/internal/errcode"
	"github.com/arcacache/arca/internal/oci"
)

// How resolve found a repository's cache target.
type resolution int

const (
	notCached         resolution = iota // ours, no rule
	byRule                              // a rule's target, or the upstream a request's ns names
	byMirrorNamespace                   // guessed: --mirror-namespace for a path neither ours nor a rule's
)

// resolve finds the cache target for a request: by rule on the repository
// path, or, for the reads of a mirror pull, by the upstream they name.
// Pushes and deletes are about our own names: mapped through no mirror, a
// push to a new repository "myapp" stays ours with the default mirror
// namespace too.
func (h *Handler) resolve(r *http.Request, reg string, rt route) (cache.Target, resolution, error) {
	ctx := r.Context()
	found := func(t cache.Target, ok bool, how resolution, err error) (cache.Target, resolution, error) {
		if err != nil || !ok {
			return t, notCached, err
		}
		return t, how, nil
	}
	if !mirrorRead(r, rt) {
		t, ok, err := h.rules.Resolve(ctx, reg, rt.repo, "")
		return found(t, ok, byRule, err)
	}
	if ns := r.URL.Query().Get("ns"); ns != "" {
		t, ok, err := h.rules.Resolve(ctx, reg, rt.repo, ns)
		if err != nil || ok {
			return found(t, ok, byRule, err)
		}
		// An ns no rule's source is on is served as if it were absent
		// (regctl sends ns=<the host it was configured for>: arca).
		if covered, err := h.rules.MirrorsHost(ctx, reg, ns); err != nil || covered {
			return found(t, false, byRule, err)
		}
	}
	t, ok, err := h.rules.Resolve(ctx, reg, rt.repo, "")
	if err != nil || ok || h.mirrorNS == "" {
		return found(t, ok, byRule, err)
	}
	// Docker's registry-mirrors: a Docker Hub path that is neither ours
	// nor under a rule.
	if exists, err := h.meta.RepositoryExists(ctx, reg, rt.repo); err != nil || exists {
		return found(t, false, byRule, err)
	}
	t, ok, err = h.rules.Resolve(ctx, reg, rt.repo, h.mirrorNS)
	return found(t, ok, byMirrorNamespace, err)
}

// mirrorRead reports whether r is one of the reads a pull sends through a
// mirror: manifests (GET, HEAD), blobs, tag lists and referrers (GET). A
// HEAD of a blob is a pusher asking whether to upload, never a puller.
func mirrorRead(r *http.Request, rt route) bool {
	switch r.Method {
	case http.MethodGet:
		return true
	case http.MethodHead:
		return rt.kind == kindManifest
	}
	return false
}

// serveCached answers requests for a repository served by a cache rule,
// counting the pull reads per rule (their cache result and body bytes).
func (h *Handler) serveCached(w http.ResponseWriter, r *http.Request, reg string, rt route, t cache.Target) error {
	if h.stats == nil || !mirrorRead(r, rt) {
		return h.serveCachedKind(w, r, reg, rt, t)
	}
	cw := &countingWriter{ResponseWriter: w}
	err := h.serveCachedKind(cw, r, reg, rt, t)
	result := w.Header().Get("X-Arca-Cache")
	if err != nil {
		result = "error"
	}
	if result != "" {
		h.stats.Served(reg, t.Rule, rt.kind, result, cw.n)
	}
	return err
}

func (h *Handler) serveCachedKind(w http.ResponseWriter, r *http.Request, reg string, rt route, t cache.Target) error {
	switch {
	case rt.kind == kindManifest && r.Method == http.MethodDelete:
		return h.deleteManifest(w, r, reg, t.Repo, rt.ref)
	case rt.kind == kindBlob && r.Method == http.MethodDelete:
		return h.blob(w, r, reg, t.Repo, rt.ref)
	case rt.kind == kindManifest && r.Method == http.MethodPut, rt.kind == kindUploads, rt.kind == kindUpload:
		return errcode.New(errcode.Denied, fmt.Sprintf("repository %s is served by cache rule '%s' from %s; pushes to it are not allowed", rt.repo, t.Rule, t.Upstream))
	case rt.kind == kindManifest:
		return h.cachedManifest(w, r, reg, rt.ref, t)
	case rt.kind == kindBlob:
		return h.cachedBlob(w, r, reg, rt.ref, t)
	case rt.kind == kindReferrers:
		return h.cachedReferrers(w, r, reg, rt.ref, t)
	case rt.kind == kindTags:
		return h.cachedTags(w, r, reg, t)
	}
	return errcode.New(errcode.Unsupported, "unsupported on a cached repository")
}

func (h *Handler) cachedManifest(w http.ResponseWriter, r *http.Request, reg, ref string, t cache.Target) error {
	if _, _, err := parsePullRef(ref); err != nil {
		return err
	}
	m, status, err := h.cache.Manifest(r.Context(), reg, t, ref)
	if err != nil {
		return err
	}
	w.Header().Set("X-Arca-Cache", string(status))
	h.pulledManifest(reg, t.Repo, ref, m.Digest)
	return h.serveManifestBytes(w, r, m)
}

func (h *Handler) cachedBlob(w http.ResponseWriter, r *http.Request, reg, ref string, t cache.Target) error {
	d, err := parseDigest(ref)
	if err != nil {
		return err
	}
	if r.Method == http.MethodHead {
		size, status, err := h.cache.StatBlob(r.Context(), reg, t, d)
		if err != nil {
			return err
		}
		hd := w.Header()
		hd.Set("X-Arca-Cache", string(status))
		hd.Set("Docker-Content-Digest", d.String())
		hd.Set("Content-Type", "application/octet-stream")
		if size >= 0 {
			hd.Set("Content-Length", strconv.FormatInt(size, 10))
		}
		w.WriteHeader(http.StatusOK)
		return nil
	}
	src, status, err := h.cache.Blob(r.Context(), reg, t, d)
	if err != nil {
		return err
	}
	if h.pulls != nil {
		h.pulls.Blob(reg, t.Repo, d)
	}
	w.Header().Set("X-Arca-Cache", string(status))
	if src.Reader == nil {
		return h.serveBlob(w, r, d, src.Size)
	}
	defer src.Reader.Close()
	hd := w.Header()
	hd.Set("Docker-Content-Digest", d.String())
	hd.Set("Content-Type", "application/octet-stream")
	if src.Size >= 0 {
		hd.Set("Content-Length", strconv.FormatInt(src.Size, 10))
	}
	w.WriteHeader(http.StatusOK)
	// A follower writes straight from the fetch's memory while it keeps
	// up; on a plain connection, what it must read back from the staged
	// file goes out with sendfile (over TLS net/http would read that file
	// back into a buffer: the follower's own is as good).
	if fs, ok := src.Reader.(fileSender); ok && r.TLS == nil {
		_, err = fs.SendFile(w)
	} else {
		_, err = io.Copy(w, src.Reader)
	}
	if err != nil {
		// The body is cut short on purpose: the client must see a failed
		// transfer, never a complete-looking body of unverified bytes.
		if !errors.Is(err, r.Context().Err()) {
			h.log.Warn("aborting blob response: upstream fetch failed", "digest", d, "rule", t.Rule, "err", err)
		}
		panic(http.ErrAbortHandler)
	}
	return nil
}

// fileSender is a followed fetch that can send its bytes from the staged
// file (cache.BlobSource.Reader).
type fileSender interface {
	SendFile(w io.Writer) (int64, error)
}

// cachedReferrers merges the upstream's referrers with local ones. When the
// upstream fails, local referrers are still served.
func (h *Handler) cachedReferrers(w http.ResponseWriter, r *http.Request, reg, ref string, t cache.Target) error {
	d, err := parseDigest(ref)
	if err != nil {
		return err
	}
	artifactType := r.URL.Query().Get("artifactType")
	idx, err := h.localReferrers(r, reg, t.Repo, d, artifactType)
	if err != nil {
		return err
	}
	upList, err := h.cache.Referrers(r.Context(), t, d, artifactType)
	status := cache.Miss // the upstream's list, asked now
	if err != nil {
		h.log.Warn("upstream referrers unavailable; serving local ones", "rule", t.Rule, "subject", d, "err", err)
		status = cache.Stale
	}
	w.Header().Set("X-Arca-Cache", string(status))
	seen := map[string]bool{}
	for _, m := range idx.Manifests {
		seen[m.Digest.String()] = true
	}
	for _, m := range upList {
		if !seen[m.Digest.String()] && (artifactType == "" || m.ArtifactType == artifactType) {
			seen[m.Digest.String()] = true
			idx.Manifests = append(idx.Manifests, m)
		}
	}
	if artifactType != "" {
		w.Header().Set("OCI-Filters-Applied", "artifactType")
	}
	return writeJSON(w, oci.MediaTypeOCIIndex, idx)
}

// countingWriter counts body bytes; ReadFrom keeps the underlying
// writer's sendfile path for blobs served from files.
type countingWriter struct {
	http.ResponseWriter
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.n += int64(n)
	return n, err
}

func (c *countingWriter) ReadFrom(src io.Reader) (int64, error) {
	n, err := io.Copy(c.ResponseWriter, src)
	c.n += n
	return n, err
}

func (c *countingWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }
