package upstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
)

// maxTagsPage bounds one tags/list answer (1,000 tags of 128 bytes is
// ~130 KiB; some registries ignore n).
const maxTagsPage = 16 << 20

// maxPages stops a pagination loop that never ends.
const maxPages = 10000

// Tags lists a repository's tags, calling fn once per non-empty page
// (n=Options.TagPageSize, following Link rel="next"). An error from fn
// stops the listing and is returned as is.
func (c *Client) Tags(ctx context.Context, r Repo, fn func(page []string) error) error {
	p, err := c.prepare(r)
	if err != nil {
		return err
	}
	const op = "GET tags"
	u := p.url("/tags/list", url.Values{"n": {strconv.Itoa(c.opts.TagPageSize)}})
	for pages := 0; u != nil; pages++ {
		if pages >= maxPages {
			return fmt.Errorf("%s %s: more than %d pages", op, p.repo, maxPages)
		}
		resp, err := c.do(ctx, op, p, http.MethodGet, u, "application/json")
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK {
			return statusError(op, p.repo.String(), resp)
		}
		var list struct {
			Tags []string `json:"tags"`
		}
		err = json.NewDecoder(io.LimitReader(resp.Body, maxTagsPage)).Decode(&list)
		resp.Body.Close()
		if err != nil {
			return readError(op, p.repo.String(), fmt.Errorf("decoding tags list: %w", err))
		}
		if u, err = nextPage(resp, u); err != nil {
			return fmt.Errorf("%s %s: %w", op, p.repo, err)
		}
		if len(list.Tags) > 0 {
			if err := fn(list.Tags); err != nil {
				return err
			}
		}
	}
	return nil
}

// nextPage resolves the Link rel="next" of resp against the request URL.
// A link to another scheme or host is refused: our token is for this one.
func nextPage(resp *http.Response, cur *url.URL) (*url.URL, error) {
	target, ok := parseLinkNext(resp.Header.Values("Link"))
	if !ok {
		return nil, nil
	}
	ref, err := url.Parse(target)
	if err != nil {
		return nil, fmt.Errorf("invalid Link %q: %w", oneLine(target, 200), err)
	}
	next := cur.ResolveReference(ref)
	if next.Scheme != cur.Scheme || next.Host != cur.Host {
		return nil, fmt.Errorf("link rel=next points to another host (%s)", oneLine(next.Redacted(), 200))
	}
	if next.String() == cur.String() {
		return nil, errors.New("link rel=next points to the same page")
	}
	return next, nil
}
