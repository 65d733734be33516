package upstream

import (
	"context"
	"fmt"
	"io"
	"net/http"

	"github.com/opencontainers/go-digest"
)

// GetBlob opens a blob for streaming. size is the Content-Length (-1 when
// unknown). Redirects (to blob storage) are followed without our
// Authorization header. The caller verifies the bytes; a stream that stalls
// for Options.IdleTimeout fails its Read.
func (c *Client) GetBlob(ctx context.Context, r Repo, d digest.Digest) (io.ReadCloser, int64, error) {
	p, err := c.prepare(r)
	if err != nil {
		return nil, 0, err
	}
	if err := d.Validate(); err != nil {
		return nil, 0, fmt.Errorf("upstream: invalid blob digest %q: %w", d, err)
	}
	const op = "GET blob"
	resp, err := c.do(ctx, op, p, http.MethodGet, p.url("/blobs/"+d.String(), nil), "")
	if err != nil {
		return nil, 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, 0, statusError(op, p.repo.String(), resp)
	}
	return resp.Body, resp.ContentLength, nil
}

// HeadBlob asks whether the upstream has blob d and how large it is,
// without downloading it.
func (c *Client) HeadBlob(ctx context.Context, r Repo, d digest.Digest) (int64, error) {
	p, err := c.prepare(r)
	if err != nil {
		return 0, err
	}
	if err := d.Validate(); err != nil {
		return 0, fmt.Errorf("upstream: invalid blob digest %q: %w", d, err)
	}
	const op = "HEAD blob"
	resp, err := c.do(ctx, op, p, http.MethodHead, p.url("/blobs/"+d.String(), nil), "")
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, statusError(op, p.repo.String(), resp)
	}
	resp.Body.Close()
	return resp.ContentLength, nil
}
