// Package registry serves the OCI Distribution Spec v1.1 API under /v2/:
// manifests, blobs, uploads, tags, catalog and referrers. Handlers parse the
// route once, call the stores, and return errors that errcode.Write maps
// to the spec's codes.
package registry

import (
	"context"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/arcacache/arca/internal/blobstore"
	"github.com/arcacache/arca/internal/cache"
	"github.com/arcacache/arca/internal/content"
	"github.com/arcacache/arca/internal/errcode"
	"github.com/arcacache/arca/internal/metadata"
	"github.com/arcacache/arca/internal/oci"
)

// BlobIndex records which blobs each repository holds.
type BlobIndex interface {
	PrepareBlob(ctx context.Context, d digest.Digest, size int64) error
	LinkBlob(ctx context.Context, registry, repo string, d digest.Digest, size int64) error
	BlobSize(ctx context.Context, registry, repo string, d digest.Digest) (int64, error)
	UnlinkBlob(ctx context.Context, registry, repo string, d digest.Digest) error
}

// ManifestIndex records manifests, their references and tags.
type ManifestIndex interface {
	MissingRefs(ctx context.Context, registry, repo string, refs []metadata.Ref) ([]metadata.Ref, error)
	PutManifest(ctx context.Context, m metadata.Manifest, tags ...string) error
	GetManifest(ctx context.Context, registry, repo string, d digest.Digest) (metadata.Manifest, error)
	GetTag(ctx context.Context, registry, repo, tag string) (metadata.Tag, error)
	DeleteTag(ctx context.Context, registry, repo, tag string) error
	DeleteManifest(ctx context.Context, registry, repo string, d digest.Digest) error
	Referrers(ctx context.Context, registry, repo string, d digest.Digest, artifactType string) ([]metadata.Referrer, error)
}

// Lister pages through tags and repositories.
type Lister interface {
	ListTags(ctx context.Context, registry, repo, last string, n int) ([]string, bool, error)
	ListRepositories(ctx context.Context, registry, last string, n int) ([]string, bool, error)
	RepositoryExists(ctx context.Context, registry, repo string) (bool, error)
	// MarkPushed records that a repository received pushed content (which
	// keeps cache rules from claiming it).
	MarkPushed(ctx context.Context, registry, repo string) error
}

// UploadIndex records upload sessions and their progress, so any replica
// can continue one.
type UploadIndex interface {
	content.Uploads
	CreateUpload(ctx context.Context, registry, repo, id string) error
	UploadExists(ctx context.Context, registry, repo, id string) (bool, error)
	DeleteUpload(ctx context.Context, id string) error
}

// Metadata is everything the registry needs from the metadata store.
type Metadata interface {
	BlobIndex
	ManifestIndex
	Lister
	UploadIndex
}

// Options configure a Handler.
type Options struct {
	Blobs  blobstore.Backend
	Meta   Metadata
	Logger *slog.Logger
	// Registry names the registry a request addresses (by Host).
	Registry func(*http.Request) string
	// MaxManifest bounds manifest bodies (default oci.MaxManifestSize).
	MaxManifest int64
	// MaxBlobSize bounds one uploaded blob (default DefaultMaxBlobSize).
	MaxBlobSize int64
	// BlobRedirect sends blob GETs to a presigned backend URL valid this
	// long when the backend can presign (0: stream them).
	BlobRedirect time.Duration
	// Rules and Cache serve repositories backed by cache rules (optional).
	Rules Resolver
	Cache *cache.Cache
	// MirrorNamespace, when set (normally "docker.io"), lets requests that
	// match no rule and no local repository be read as mirror requests for
	// that registry: Docker's registry-mirrors sends Docker Hub paths as is.
	MirrorNamespace string
	// Access checks every request (nil: no access control; the server
	// always sets one, closed unless started with --insecure-open).
	Access Access
	// MaxUploadsPerIdentity caps the upload sessions one identity may have
	// open (started within UploadMaxAge); <= 0: no cap.
	MaxUploadsPerIdentity int
	UploadMaxAge          time.Duration
	// UploadSessionLifetime is the longest an upload session may take
	// from its start (<= 0: no limit).
	UploadSessionLifetime time.Duration
	// Stats, if set, counts pull reads per cache rule.
	Stats Stats
	// Pulls, if set, records when manifests, tags and blobs were pulled.
	Pulls PullRecorder
	// PushQuota, if set, refuses pushes over a registry's storage quota.
	PushQuota PushQuota
}

// PullRecorder records pulls (batched: lifecycle.Tracker); tag is "" for a
// pull by digest.
type PullRecorder interface {
	Manifest(registry, repo string, d digest.Digest, tag string)
	Blob(registry, repo string, d digest.Digest)
}

// PushQuota bounds a registry's pushed bytes: Check refuses n more bytes
// (n < 0: not known yet) with DENIED; Added counts bytes stored.
type PushQuota interface {
	Check(ctx context.Context, registry string, n int64) error
	Added(registry string, n int64)
}

// Stats counts a response served through cache rule rule: its kind, cache
// result and body bytes.
type Stats interface {
	Served(registry, rule, kind, result string, bytes int64)
}

// Resolver finds the cache rule serving a repository. ns is the upstream
// host a mirror request names (containerd's ?ns=), or "".
type Resolver interface {
	Resolve(ctx context.Context, registry, repo, ns string) (cache.Target, bool, error)
	// MirrorsHost reports whether some rule's source is on host.
	MirrorsHost(ctx context.Context, registry, host string) (bool, error)
}

// Handler serves /v2/ and ACR's repository API, /acr/v1/ (acr.go).
type Handler struct {
	blobs       blobstore.Backend
	meta        Metadata
	log         *slog.Logger
	registry    func(*http.Request) string
	maxManifest int64
	maxBlob     int64
	content     *content.Store
	rules       Resolver
	cache       *cache.Cache
	mirrorNS    string
	redirect    time.Duration
	access      Access
	maxUploads  int
	// uploadMaxAge is how long a started session counts against its
	// identity (abandoned ones are purged after it).
	uploadMaxAge    time.Duration
	sessionLifetime time.Duration
	stats           Stats
	pulls           PullRecorder
	quota           PushQuota
}

// New returns the /v2/ handler.
func New(o Options) *Handler {
	if o.MaxManifest <= 0 {
		o.MaxManifest = oci.MaxManifestSize
	}
	if o.MaxBlobSize <= 0 {
		o.MaxBlobSize = DefaultMaxBlobSize
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return &Handler{
		blobs: o.Blobs, meta: o.Meta, log: o.Logger, registry: o.Registry, maxManifest: o.MaxManifest, maxBlob: o.MaxBlobSize,
		content: &content.Store{Blobs: o.Blobs, Index: o.Meta, Uploads: o.Meta, MaxBlobSize: o.MaxBlobSize},
		rules:   o.Rules, cache: o.Cache, mirrorNS: o.MirrorNamespace, access: o.Access, redirect: o.BlobRedirect, stats: o.Stats, pulls: o.Pulls, quota: o.PushQuota,
		maxUploads: o.MaxUploadsPerIdentity, uploadMaxAge: o.UploadMaxAge, sessionLifetime: o.UploadSessionLifetime,
	}
}

// Route kinds.
const (
	kindBase      = "base"
	kindCatalog   = "catalog"
	kindTags      = "tags"
	kindManifest  = "manifest"
	kindBlob      = "blob"
	kindUploads   = "uploads" // POST to start
	kindUpload    = "upload"  // an upload session
	kindReferrers = "referrers"
	kindUnknown   = "unknown"
	// kindBadPath is a path with empty, "." or ".." elements: never a valid
	// name, and never cleaned into another path behind the client's back.
	kindBadPath = "badpath"
)

// route is a parsed /v2/ path.
type route struct {
	kind string
	repo string
	ref  string // tag, digest or upload id
}

// parseRoute anchors on the last path elements, because repository names
// may have any number of segments. It takes the escaped path.
func parseRoute(path string) route {
	acr := strings.HasPrefix(path, acrPrefix)
	p := strings.TrimPrefix(strings.TrimPrefix(path, acrPrefix), "/v2/")
	if p == "" && !acr {
		return route{kind: kindBase}
	}
	if p == "_catalog" && !acr {
		return route{kind: kindCatalog}
	}
	el := strings.Split(p, "/")
	for i, e := range el {
		// Unescape per element, so an encoded "/" stays inside its element
		// and fails validation instead of changing the route.
		if u, err := url.PathUnescape(e); err == nil {
			el[i] = u
		} else {
			return route{kind: kindUnknown}
		}
	}
	n := len(el)
	for _, e := range el[:n-1] {
		if e == "" || e == "." || e == ".." {
			return route{kind: kindBadPath}
		}
	}
	if acr {
		return parseACRRoute(el)
	}
	switch {
	case n >= 3 && el[n-2] == "tags" && el[n-1] == "list":
		return route{kind: kindTags, repo: strings.Join(el[:n-2], "/")}
	case n >= 3 && el[n-2] == "manifests":
		return route{kind: kindManifest, repo: strings.Join(el[:n-2], "/"), ref: el[n-1]}
	case n >= 3 && el[n-2] == "referrers":
		return route{kind: kindReferrers, repo: strings.Join(el[:n-2], "/"), ref: el[n-1]}
	case n >= 4 && el[n-3] == "blobs" && el[n-2] == "uploads":
		if el[n-1] == "" {
			return route{kind: kindUploads, repo: strings.Join(el[:n-3], "/")}
		}
		return route{kind: kindUpload, repo: strings.Join(el[:n-3], "/"), ref: el[n-1]}
	case n >= 3 && el[n-2] == "blobs" && el[n-1] == "uploads":
		return route{kind: kindUploads, repo: strings.Join(el[:n-2], "/")}
	case n >= 3 && el[n-2] == "blobs":
		return route{kind: kindBlob, repo: strings.Join(el[:n-2], "/"), ref: el[n-1]}
	}
	return route{kind: kindUnknown}
}

// RouteName is the metrics label for a /v2/ path.
func RouteName(path string) string { return parseRoute(path).kind }

// allowed lists the methods each route kind answers.
var allowed = map[string][]string{
	kindBase:      {http.MethodGet, http.MethodHead},
	kindCatalog:   {http.MethodGet},
	kindTags:      {http.MethodGet},
	kindManifest:  {http.MethodGet, http.MethodHead, http.MethodPut, http.MethodDelete},
	kindBlob:      {http.MethodGet, http.MethodHead, http.MethodDelete},
	kindUploads:   {http.MethodPost},
	kindUpload:    {http.MethodGet, http.MethodPatch, http.MethodPut, http.MethodDelete},
	kindReferrers: {http.MethodGet},

	kindACRCatalog:   {http.MethodGet},
	kindACRRepo:      {http.MethodGet, http.MethodDelete},
	kindACRTags:      {http.MethodGet},
	kindACRTag:       {http.MethodGet, http.MethodDelete},
	kindACRManifests: {http.MethodGet},
	kindACRManifest:  {http.MethodGet},
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	rt := parseRoute(r.URL.EscapedPath())
	if rt.kind == kindBadPath {
		errcode.Write(w, r, errcode.New(errcode.NameInvalid, "invalid path: empty, \".\" or \"..\" elements are not allowed"))
		return
	}
	if rt.kind == kindUnknown {
		errcode.Write(w, r, errcode.New(errcode.NameUnknown, "no such endpoint: "+r.URL.Path))
		return
	}
	if !methodAllowed(rt.kind, r.Method) {
		w.Header().Set("Allow", strings.Join(allowed[rt.kind], ", "))
		errcode.Write(w, r, errcode.New(errcode.Unsupported, r.Method+" is not supported on this endpoint"))
		return
	}
	if rt.repo != "" && !oci.ValidRepository(rt.repo) {
		errcode.Write(w, r, errcode.NameInvalid.WithDetail("invalid repository name", map[string]string{"name": rt.repo}))
		return
	}
	reg := h.registry(r)
	ri := requestInfo(r.Context())
	ri.Repo = rt.repo
	var ok bool
	if rt.repo != "" && h.rules != nil && h.cache != nil && !isACR(rt.kind) {
		t, how, err := h.resolve(r, reg, rt)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		if how != notCached {
			// Access is checked on the repository served (a mirror
			// request names the upstream's), before any upstream request.
			served := rt
			served.repo = t.Repo
			if r, ok = h.authorize(w, r, reg, served); !ok {
				return
			}
			ri.Repo, ri.Rule, ri.Upstream = t.Repo, t.Rule, t.Upstream.String()
			err = h.serveCached(w, r, reg, rt, t)
			if err == nil {
				return
			}
			if how != byMirrorNamespace {
				h.fail(w, r, err)
				return
			}
			// The mirror namespace is a guess for a path that is neither
			// ours nor a rule's. When its upstream cannot serve it, the
			// answer is for our own name (a 404, mostly): a push's
			// existence checks (HEAD) go on, a mirror client falls back
			// to its primary.
			h.log.Debug("mirror namespace upstream failed; answering for our own repository", "repo", rt.repo, "rule", t.Rule, "err", err)
			ri.Repo = rt.repo // the access log keeps the rule tried
		}
	}
	if r, ok = h.authorize(w, r, reg, rt); !ok {
		return
	}
	var err error
	switch rt.kind {
	case kindBase:
		w.Header().Set("Content-Type", "application/json")
		_, err = w.Write([]byte("{}"))
	case kindCatalog:
		err = h.catalog(w, r, reg)
	case kindTags:
		err = h.tags(w, r, reg, rt.repo)
	case kindReferrers:
		err = h.referrers(w, r, reg, rt.repo, rt.ref)
	case kindManifest:
		err = h.manifest(w, r, reg, rt.repo, rt.ref)
	case kindBlob:
		err = h.blob(w, r, reg, rt.repo, rt.ref)
	case kindUploads:
		err = h.startUpload(w, r, reg, rt.repo)
	case kindUpload:
		err = h.upload(w, r, reg, rt.repo, rt.ref)
	default: // isACR(rt.kind)
		err = h.serveACR(w, r, reg, rt)
	}
	if err != nil {
		h.fail(w, r, err)
	}
}

// pulledManifest records a pull of manifest d of repo by ref (a tag or
// the digest).
func (h *Handler) pulledManifest(reg, repo, ref string, d digest.Digest) {
	if h.pulls == nil {
		return
	}
	tag := ref
	if ref == d.String() {
		tag = ""
	}
	h.pulls.Manifest(reg, repo, d, tag)
}

// checkQuota asks the push quota about n more bytes (n < 0: unknown).
func (h *Handler) checkQuota(r *http.Request, reg string, n int64) error {
	if h.quota == nil {
		return nil
	}
	return h.quota.Check(r.Context(), reg, n)
}

func (h *Handler) addedBytes(reg string, n int64) {
	if h.quota != nil {
		h.quota.Added(reg, n)
	}
}

func methodAllowed(kind, method string) bool {
	for _, m := range allowed[kind] {
		if m == method {
			return true
		}
	}
	return false
}

// fail writes err; anything that is not a registry error is logged, since
// the client only sees a generic UNKNOWN.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	if h.clientGone(w, r, err) || h.storageFull(w, r, err) {
		return
	}
	if errcode.Status(err) >= 500 {
		h.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	errcode.Write(w, r, err)
}
