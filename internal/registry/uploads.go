package registry

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/arcacache/arca/internal/blobstore"
	"github.com/arcacache/arca/internal/content"
	"github.com/arcacache/arca/internal/errcode"
	"github.com/arcacache/arca/internal/metadata"
	"github.com/arcacache/arca/internal/oci"
)

// startUpload handles POST /v2/<name>/blobs/uploads/: a cross-repository
// mount, a single-request monolithic upload (?digest=), or a new session.
func (h *Handler) startUpload(w http.ResponseWriter, r *http.Request, reg, repo string) error {
	q := r.URL.Query()
	if mount := q.Get("mount"); mount != "" {
		d, err := parseDigest(mount)
		if err != nil {
			return err
		}
		if from := q.Get("from"); from != "" && oci.ValidRepository(from) {
			size, err := h.mountable(r, reg, from, d)
			if err == nil {
				if err := h.checkQuota(r, reg, size); err != nil {
					return err
				}
				// ErrNotFound: garbage collection is deleting it.
				err = h.meta.LinkBlob(r.Context(), reg, repo, d, size)
			}
			if err == nil {
				h.addedBytes(reg, size)
				if err := h.meta.MarkPushed(r.Context(), reg, repo); err != nil {
					return err
				}
				return blobCreated(w, repo, d)
			}
			if !errors.Is(err, metadata.ErrNotFound) {
				return err
			}
		}
		// Not mountable: fall back to a regular upload session, as the spec says.
	}
	if dg := q.Get("digest"); dg != "" {
		d, err := parseDigest(dg)
		if err != nil {
			return err
		}
		if err := h.checkQuota(r, reg, r.ContentLength); err != nil {
			return err
		}
		wr, err := h.content.NewWriter(r.Context(), d, -1)
		if err != nil {
			return err
		}
		if _, err := h.copyBody(wr, r); err != nil {
			wr.Cancel()
			return err
		}
		return h.commitUpload(w, r, reg, repo, wr, d, "")
	}
	if err := h.checkQuota(r, reg, -1); err != nil {
		return err
	}
	id := blobstore.NewID()
	if err := h.createUpload(r, reg, repo, id); err != nil {
		return err
	}
	return uploadAccepted(w, repo, id, 0, http.StatusAccepted)
}

func (h *Handler) upload(w http.ResponseWriter, r *http.Request, reg, repo, id string) error {
	unknown := errcode.New(errcode.BlobUploadUnknown, fmt.Sprintf("upload %q is not known in %s", id, repo))
	if !blobstore.ValidID(id) {
		return unknown
	}
	ok, err := h.uploadOpen(r, reg, repo, id)
	if err != nil {
		return err
	}
	if !ok {
		return unknown
	}
	switch r.Method {
	case http.MethodGet:
		size, err := h.content.UploadSize(r.Context(), id)
		if err != nil {
			return h.uploadErr(err, unknown)
		}
		return uploadAccepted(w, repo, id, size, http.StatusNoContent)
	case http.MethodDelete:
		if err := h.content.DiscardUpload(r.Context(), id); err != nil {
			return err
		}
		if err := h.meta.DeleteUpload(r.Context(), id); err != nil {
			return err
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	var d digest.Digest
	if r.Method != http.MethodPatch {
		dg := r.URL.Query().Get("digest")
		if dg == "" {
			return errcode.New(errcode.DigestInvalid, "the digest query parameter is required to complete an upload")
		}
		if d, err = digest.Parse(dg); err != nil {
			return errcode.New(errcode.DigestInvalid, fmt.Sprintf("invalid digest %q", dg))
		}
	}
	wr, err := h.content.ResumeUpload(r.Context(), id)
	if err != nil {
		return h.uploadErr(err, unknown)
	}
	if err := checkContentRange(r, wr.Size()); err != nil {
		wr.Cancel()
		return err
	}
	if err := h.checkQuota(r, reg, wr.Size()+max(r.ContentLength, 0)); err != nil {
		// Refused for good: the session's bytes and row go now.
		wr.Cancel()
		_ = h.content.DiscardUpload(r.Context(), id)
		_ = h.meta.DeleteUpload(r.Context(), id)
		return err
	}
	if lost, err := h.copyBody(wr, r); err != nil {
		wr.Cancel()
		if lost {
			// Past the size limit or out of space: the session can never
			// complete, so its bytes and row go now, not at the purge.
			_ = h.content.DiscardUpload(r.Context(), id)
			_ = h.meta.DeleteUpload(r.Context(), id)
		}
		return err
	}
	if r.Method == http.MethodPatch {
		if err := wr.Save(r.Context()); err != nil {
			return h.uploadErr(err, unknown)
		}
		return uploadAccepted(w, repo, id, wr.Size(), http.StatusAccepted)
	}
	return h.commitUpload(w, r, reg, repo, wr, d, id)
}

func (h *Handler) uploadErr(err error, unknown error) error {
	if errors.Is(err, blobstore.ErrUploadNotFound) || errors.Is(err, blobstore.ErrInvalidID) {
		return unknown
	}
	if errors.Is(err, blobstore.ErrUploadBusy) {
		return errcode.New(errcode.BlobUploadInvalid, "another request wrote this upload meanwhile; ask where it ends (GET) and send from there").WithStatus(http.StatusConflict)
	}
	return err
}

// commitUpload verifies and commits the staged blob, then links it.
func (h *Handler) commitUpload(w http.ResponseWriter, r *http.Request, reg, repo string, wr *content.Writer, d digest.Digest, sessionID string) error {
	ctx := r.Context()
	if err := h.checkQuota(r, reg, wr.Size()); err != nil {
		wr.Cancel()
		if sessionID != "" {
			_ = h.content.DiscardUpload(ctx, sessionID)
			_ = h.meta.DeleteUpload(ctx, sessionID)
		}
		return err
	}
	if err := h.content.CommitBlob(ctx, wr, reg, repo, d, -1); err != nil {
		if sessionID != "" {
			_ = h.meta.DeleteUpload(ctx, sessionID)
		}
		switch {
		case errors.Is(err, blobstore.ErrDigestMismatch), errors.Is(err, blobstore.ErrSizeMismatch):
			return errcode.New(errcode.DigestInvalid, err.Error())
		case errors.Is(err, blobstore.ErrUploadNotFound): // its parts were purged
			return errcode.New(errcode.BlobUploadUnknown, "the upload's staged bytes are gone (abandoned too long); start again")
		}
		return err
	}
	h.addedBytes(reg, wr.Size())
	if err := h.meta.MarkPushed(ctx, reg, repo); err != nil {
		return err
	}
	if sessionID != "" {
		if err := h.meta.DeleteUpload(ctx, sessionID); err != nil {
			h.log.Warn("forget upload", "id", sessionID, "err", err)
		}
	}
	return blobCreated(w, repo, d)
}

// checkContentRange enforces that a chunk starts where the upload ends.
func checkContentRange(r *http.Request, size int64) error {
	cr := r.Header.Get("Content-Range")
	if cr == "" {
		return nil
	}
	cr = strings.TrimPrefix(cr, "bytes ")
	cr = strings.TrimPrefix(cr, "bytes=")
	startS, endS, ok := strings.Cut(cr, "-")
	start, err1 := strconv.ParseInt(startS, 10, 64)
	end, err2 := strconv.ParseInt(strings.SplitN(endS, "/", 2)[0], 10, 64)
	if !ok || err1 != nil || err2 != nil || end < start {
		return errcode.New(errcode.RangeInvalid, fmt.Sprintf("invalid Content-Range %q", r.Header.Get("Content-Range")))
	}
	if start != size {
		return errcode.New(errcode.RangeInvalid, fmt.Sprintf("chunk starts at %d but the upload holds %d bytes", start, size))
	}
	if r.ContentLength >= 0 && r.ContentLength != end-start+1 {
		return errcode.New(errcode.RangeInvalid, fmt.Sprintf("Content-Range covers %d bytes but Content-Length is %d", end-start+1, r.ContentLength))
	}
	return nil
}

// copyBody appends the request body to wr; the writer refuses bytes past
// the blob size limit. A body shorter than its declared Content-Length (a
// cut connection) is an error, never a silent success. lost says the
// upload cannot be completed any more (too large, or no space left).
func (h *Handler) copyBody(wr *content.Writer, r *http.Request) (lost bool, err error) {
	tooLarge := errcode.New(errcode.SizeInvalid, fmt.Sprintf("the blob is larger than this registry accepts (%d bytes)", h.maxBlob)).
		WithStatus(http.StatusRequestEntityTooLarge)
	if r.ContentLength > h.maxBlob-wr.Size() {
		return true, tooLarge
	}
	n, err := wr.ReadFrom(r.Body)
	if errors.Is(err, blobstore.ErrTooLarge) {
		return true, tooLarge
	}
	if err != nil {
		if isStorageFull(err) {
			return true, errStorageFull(err)
		}
		return false, errcode.New(errcode.BlobUploadInvalid, "reading upload body: "+err.Error())
	}
	if r.ContentLength >= 0 && n != r.ContentLength {
		return false, errcode.New(errcode.SizeInvalid, fmt.Sprintf("received %d bytes, Content-Length said %d", n, r.ContentLength))
	}
	return false, nil
}

func uploadAccepted(w http.ResponseWriter, repo, id string, size int64, status int) error {
	hd := w.Header()
	hd.Set("Location", "/v2/"+repo+"/blobs/uploads/"+id)
	hd.Set("Docker-Upload-UUID", id)
	end := size - 1
	if end < 0 {
		end = 0
	}
	hd.Set("Range", fmt.Sprintf("0-%d", end))
	hd.Set("Content-Length", "0")
	w.WriteHeader(status)
	return nil
}

func blobCreated(w http.ResponseWriter, repo string, d digest.Digest) error {
	hd := w.Header()
	hd.Set("Location", "/v2/"+repo+"/blobs/"+d.String())
	hd.Set("Docker-Content-Digest", d.String())
	hd.Set("Content-Length", "0")
	w.WriteHeader(http.StatusCreated)
	return nil
}
