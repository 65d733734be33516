package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/arcacache/arca/internal/oci"
)

// ErrDigestMismatch: the upstream's manifest bytes do not hash to the
// requested digest or to its own Docker-Content-Digest header.
var ErrDigestMismatch = errors.New("digest mismatch")

// ErrManifestTooLarge: the manifest exceeds oci.MaxManifestSize (4 MiB).
var ErrManifestTooLarge = errors.New("manifest too large")

// manifestAccept lists the four manifest media types arca stores.
var manifestAccept = strings.Join([]string{
	oci.MediaTypeOCIIndex, oci.MediaTypeOCIManifest,
	oci.MediaTypeDockerList, oci.MediaTypeDockerManifest,
}, ", ")

// HeadManifest asks for a manifest's descriptor without downloading it
// (HEAD does not count against Docker Hub's pull limit). When the upstream
// leaves out the digest, size or a manifest media type, it falls back to
// GetManifest.
func (c *Client) HeadManifest(ctx context.Context, r Repo, ref string) (Descriptor, error) {
	p, err := c.prepare(r)
	if err != nil {
		return Descriptor{}, err
	}
	refDigest, err := checkRef(ref)
	if err != nil {
		return Descriptor{}, err
	}
	const op = "HEAD manifest"
	resp, err := c.do(ctx, op, p, http.MethodHead, p.url("/manifests/"+ref, nil), manifestAccept)
	if err != nil {
		return Descriptor{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return Descriptor{}, statusError(op, p.repo.String(), resp)
	}
	resp.Body.Close()
	d := Descriptor{MediaType: baseMediaType(resp.Header.Get("Content-Type")), Size: resp.ContentLength}
	if h := resp.Header.Get("Docker-Content-Digest"); h != "" {
		if d.Digest, err = digest.Parse(h); err != nil {
			return Descriptor{}, fmt.Errorf("%s %s: invalid Docker-Content-Digest %q: %w", op, p.repo, oneLine(h, 100), err)
		}
		if refDigest != "" && d.Digest != refDigest {
			return Descriptor{}, fmt.Errorf("%s %s: %w: asked for %s, upstream says %s", op, p.repo, ErrDigestMismatch, refDigest, d.Digest)
		}
	} else {
		d.Digest = refDigest
	}
	if d.Digest == "" || d.Size < 0 || !oci.IsManifestMediaType(d.MediaType) {
		m, err := c.GetManifest(ctx, r, ref)
		if err != nil {
			return Descriptor{}, err
		}
		return Descriptor{MediaType: m.MediaType, Digest: m.Digest, Size: int64(len(m.Body))}, nil
	}
	return d, nil
}

// GetManifest fetches a manifest (at most 4 MiB) and verifies its bytes
// against ref when ref is a digest, and against the Docker-Content-Digest
// header when present (with that header's algorithm). A failed body read
// is retried like a failed request: nothing has reached the caller yet.
func (c *Client) GetManifest(ctx context.Context, r Repo, ref string) (*Manifest, error) {
	p, err := c.prepare(r)
	if err != nil {
		return nil, err
	}
	refDigest, err := checkRef(ref)
	if err != nil {
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		m, err := c.getManifest(ctx, p, ref, refDigest)
		var e *Error
		readFailed := errors.As(err, &e) && e.StatusCode == 0 && e.Op == opReadManifest
		if !readFailed || attempt >= c.opts.MaxRetries || ctx.Err() != nil {
			return m, err
		}
		c.log.WarnContext(ctx, "upstream manifest read retry", "repo", p.repo.String(), "ref", ref, "err", err)
	}
}

const (
	opGetManifest  = "GET manifest"
	opReadManifest = "GET manifest (body)"
)

func (c *Client) getManifest(ctx context.Context, p prepared, ref string, refDigest digest.Digest) (*Manifest, error) {
	resp, err := c.do(ctx, opGetManifest, p, http.MethodGet, p.url("/manifests/"+ref, nil), manifestAccept)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, statusError(opGetManifest, p.repo.String(), resp)
	}
	defer resp.Body.Close()
	if resp.ContentLength > oci.MaxManifestSize {
		return nil, fmt.Errorf("%s %s: %w: Content-Length %d", opGetManifest, p.repo, ErrManifestTooLarge, resp.ContentLength)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, oci.MaxManifestSize+1))
	if err != nil {
		return nil, readError(opReadManifest, p.repo.String(), err)
	}
	if len(body) > oci.MaxManifestSize {
		return nil, fmt.Errorf("%s %s: %w: more than %d bytes", opGetManifest, p.repo, ErrManifestTooLarge, oci.MaxManifestSize)
	}
	m := &Manifest{Body: body, MediaType: manifestMediaType(resp.Header.Get("Content-Type"), body)}
	if m.Digest, err = verifyManifest(body, refDigest, resp.Header.Get("Docker-Content-Digest")); err != nil {
		return nil, fmt.Errorf("%s %s:%s: %w", opGetManifest, p.repo, ref, err)
	}
	return m, nil
}

// verifyManifest checks body against the requested digest and the
// upstream's header, and returns the digest to store it under.
func verifyManifest(body []byte, refDigest digest.Digest, header string) (digest.Digest, error) {
	if refDigest != "" {
		if got := refDigest.Algorithm().FromBytes(body); got != refDigest {
			return "", fmt.Errorf("%w: body hashes to %s", ErrDigestMismatch, got)
		}
	}
	if header != "" {
		hd, err := digest.Parse(header)
		if err != nil {
			return "", fmt.Errorf("invalid Docker-Content-Digest %q: %w", oneLine(header, 100), err)
		}
		if hd == refDigest {
			return refDigest, nil // verified above: hash once
		}
		if got := hd.Algorithm().FromBytes(body); got != hd {
			return "", fmt.Errorf("%w: body hashes to %s, Docker-Content-Digest says %s", ErrDigestMismatch, got, hd)
		}
		if refDigest == "" {
			return hd, nil
		}
	}
	if refDigest != "" {
		return refDigest, nil
	}
	return digest.FromBytes(body), nil
}

// manifestMediaType trusts a manifest Content-Type (schema 1 included, so
// the caller can reject it by name) and otherwise reads the body.
func manifestMediaType(contentType string, body []byte) string {
	ct := baseMediaType(contentType)
	if oci.IsManifestMediaType(ct) || ct == oci.MediaTypeDockerSchema1 || ct == oci.MediaTypeDockerSchema1JS {
		return ct
	}
	return oci.DetectMediaType(contentType, body)
}

func baseMediaType(ct string) string {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		mt, _, _ = strings.Cut(ct, ";")
	}
	return strings.ToLower(strings.TrimSpace(mt))
}
