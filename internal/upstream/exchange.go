package upstream

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// maxFormAnswer bounds the body read from an upstream's token endpoints.
const maxFormAnswer = 1 << 20

// PostForm POSTs form to path on loginServer's API host (HTTPS unless the
// host is insecure), through the same transport as registry requests
// (egress policy, CAs, retries), and returns the status and body. It
// serves ACR's token exchange (/oauth2/exchange), which oras-go does not
// speak.
func (c *Client) PostForm(ctx context.Context, loginServer, path string, form url.Values) (int, []byte, error) {
	scheme, apiHost := c.endpoint(loginServer)
	u := url.URL{Scheme: scheme, Host: apiHost, Path: path}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), strings.NewReader(form.Encode()))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("User-Agent", c.opts.UserAgent)
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("POST %s: %w", u.String(), err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxFormAnswer))
	if err != nil {
		return resp.StatusCode, nil, fmt.Errorf("POST %s: reading the answer: %w", u.String(), err)
	}
	return resp.StatusCode, b, nil
}
