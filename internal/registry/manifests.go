package registry

import (
	_ "crypto/sha512" // manifests may be addressed with sha512
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"

	"github.com/opencontainers/go-digest"

	"github.com/arcacache/arca/internal/blobstore"
	"github.com/arcacache/arca/internal/content"
	"github.com/arcacache/arca/internal/errcode"
	"github.com/arcacache/arca/internal/metadata"
	"github.com/arcacache/arca/internal/oci"
)

func (h *Handler) manifest(w http.ResponseWriter, r *http.Request, reg, repo, ref string) error {
	switch r.Method {
	case http.MethodPut:
		return h.putManifest(w, r, reg, repo, ref)
	case http.MethodDelete:
		return h.deleteManifest(w, r, reg, repo, ref)
	}
	return h.getManifest(w, r, reg, repo, ref)
}

// parseRef splits a manifest reference into a tag or a digest.
func parseRef(ref string) (tag string, d digest.Digest, err error) {
	if oci.ValidTag(ref) {
		return ref, "", nil
	}
	d, err = digest.Parse(ref)
	if err != nil {
		return "", "", errcode.New(errcode.DigestInvalid, fmt.Sprintf("reference %q is neither a valid tag nor a valid digest", ref))
	}
	return "", d, nil
}

// parsePullRef is parseRef for GET and HEAD: a reference that is neither a
// tag nor a digest names a manifest that cannot exist, which clients (and
// distribution) expect as 404 MANIFEST_UNKNOWN; only a push of one is a
// client error.
func parsePullRef(ref string) (tag string, d digest.Digest, err error) {
	tag, d, err = parseRef(ref)
	if err != nil {
		return "", "", errcode.New(errcode.ManifestUnknown, fmt.Sprintf("manifest %q is not found: it is neither a valid tag nor a valid digest", ref))
	}
	return tag, d, nil
}

func (h *Handler) resolveRef(r *http.Request, reg, repo, ref string) (digest.Digest, error) {
	tag, d, err := parsePullRef(ref)
	if err != nil {
		return "", err
	}
	if d != "" {
		return d, nil
	}
	t, err := h.meta.GetTag(r.Context(), reg, repo, tag)
	if errors.Is(err, metadata.ErrNotFound) {
		return "", errcode.New(errcode.ManifestUnknown, fmt.Sprintf("manifest tagged %q is not found in %s", tag, repo))
	}
	if err != nil {
		return "", err
	}
	return t.Digest, nil
}

func (h *Handler) getManifest(w http.ResponseWriter, r *http.Request, reg, repo, ref string) error {
	d, err := h.resolveRef(r, reg, repo, ref)
	if err != nil {
		return err
	}
	m, err := h.meta.GetManifest(r.Context(), reg, repo, d)
	if errors.Is(err, metadata.ErrNotFound) {
		return errcode.New(errcode.ManifestUnknown, fmt.Sprintf("manifest %s is not found in %s", d, repo))
	}
	if err != nil {
		return err
	}
	h.pulledManifest(reg, repo, ref, m.Digest)
	return h.serveManifestBytes(w, r, m)
}

// serveManifestBytes writes a stored manifest with its headers.
func (h *Handler) serveManifestBytes(w http.ResponseWriter, r *http.Request, m metadata.Manifest) error {
	f, err := h.blobs.Open(r.Context(), m.Digest)
	if errors.Is(err, blobstore.ErrNotFound) {
		return errcode.New(errcode.ManifestUnknown, "manifest content is missing")
	}
	if err != nil {
		return err
	}
	defer f.Close()
	hd := w.Header()
	hd.Set("Content-Type", m.MediaType)
	hd.Set("Docker-Content-Digest", m.Digest.String())
	hd.Set("Content-Length", strconv.FormatInt(m.Size, 10))
	hd.Set("ETag", `"`+m.Digest.String()+`"`)
	if r.Method == http.MethodHead {
		w.WriteHeader(http.StatusOK)
		return nil
	}
	w.WriteHeader(http.StatusOK)
	_, _ = io.CopyN(w, f, m.Size)
	return nil
}

func (h *Handler) putManifest(w http.ResponseWriter, r *http.Request, reg, repo, ref string) error {
	tag, refDigest, err := parseRef(ref)
	if err != nil {
		return err
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, h.maxManifest+1))
	if err != nil {
		return errcode.New(errcode.ManifestInvalid, "reading manifest body: "+err.Error())
	}
	if int64(len(body)) > h.maxManifest {
		return errcode.New(errcode.ManifestTooLarge, fmt.Sprintf("manifest exceeds %d bytes", h.maxManifest))
	}
	if err := h.checkQuota(r, reg, int64(len(body))); err != nil {
		return err
	}
	parsed, err := oci.ParseManifest(r.Header.Get("Content-Type"), body)
	if err != nil {
		return errcode.New(errcode.ManifestInvalid, err.Error())
	}
	alg, err := manifestAlgorithm(r, refDigest)
	if err != nil {
		return err
	}
	d := alg.FromBytes(body)
	if refDigest != "" && refDigest != d {
		return errcode.New(errcode.DigestInvalid, fmt.Sprintf("manifest digest is %s, not %s", d, refDigest))
	}
	refs := content.Refs(parsed)
	missing, err := h.meta.MissingRefs(r.Context(), reg, repo, refs)
	if err != nil {
		return err
	}
	if len(missing) > 0 {
		return errcode.ManifestBlobUnknown.WithDetail(
			fmt.Sprintf("manifest references %s %s, unknown to repository %s", missing[0].Kind, missing[0].Digest, repo),
			map[string]string{"digest": missing[0].Digest.String()})
	}
	tags, err := pushTags(r, tag)
	if err != nil {
		return err
	}
	if _, err := h.content.PutManifest(r.Context(), reg, repo, d, body, parsed, tags...); err != nil {
		return err
	}
	h.addedBytes(reg, int64(len(body)))
	if err := h.meta.MarkPushed(r.Context(), reg, repo); err != nil {
		return err
	}
	hd := w.Header()
	hd.Set("Location", "/v2/"+repo+"/manifests/"+d.String())
	hd.Set("Docker-Content-Digest", d.String())
	if parsed.Subject != nil {
		hd.Set("OCI-Subject", parsed.Subject.Digest.String())
	}
	if tag == "" { // pushed by digest: say which ?tag= were applied
		for _, t := range tags {
			hd.Add("OCI-Tag", t)
		}
	}
	w.WriteHeader(http.StatusCreated)
	return nil
}

// manifestAlgorithm is the digest algorithm a manifest push is addressed
// with: the reference's when it is a digest, else ?digest-algorithm=
// (distribution-spec 1.2 draft), else sha256.
func manifestAlgorithm(r *http.Request, refDigest digest.Digest) (digest.Algorithm, error) {
	alg := digest.Canonical
	q := digest.Algorithm(r.URL.Query().Get("digest-algorithm"))
	switch {
	case refDigest != "":
		alg = refDigest.Algorithm()
		if q != "" && q != alg {
			return "", errcode.New(errcode.DigestInvalid, fmt.Sprintf("digest-algorithm=%s contradicts the reference %s", q, refDigest))
		}
	case q != "":
		alg = q
	}
	if !alg.Available() {
		return "", errcode.New(errcode.DigestInvalid, "unsupported digest algorithm "+string(alg))
	}
	return alg, nil
}

// pushTags are the tags a manifest push applies: the reference when it is
// a tag, and every ?tag= (distribution-spec 1.2 draft: push by digest and
// tag in one request).
func pushTags(r *http.Request, refTag string) ([]string, error) {
	var tags []string
	if refTag != "" {
		tags = append(tags, refTag)
	}
	for _, t := range r.URL.Query()["tag"] {
		if !oci.ValidTag(t) {
			return nil, errcode.New(errcode.TagInvalid, fmt.Sprintf("tag=%q is not a valid tag", t))
		}
		if !slices.Contains(tags, t) {
			tags = append(tags, t)
		}
	}
	return tags, nil
}

func (h *Handler) deleteManifest(w http.ResponseWriter, r *http.Request, reg, repo, ref string) error {
	tag, d, err := parseRef(ref)
	if err != nil {
		return err
	}
	if tag != "" {
		err = h.meta.DeleteTag(r.Context(), reg, repo, tag)
	} else {
		err = h.meta.DeleteManifest(r.Context(), reg, repo, d)
	}
	if errors.Is(err, metadata.ErrNotFound) {
		return errcode.New(errcode.ManifestUnknown, fmt.Sprintf("manifest %s is not found in %s", ref, repo))
	}
	if err != nil {
		return err
	}
	w.WriteHeader(http.StatusAccepted)
	return nil
}
