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

// CredentialsError is a failure to obtain a request's credentials (a
// secret that does not resolve, an identity token not obtainable or
// refused at the exchange): no request went out.
type CredentialsError struct {
	Key string // the credential key (credential set or identity)
	Err error
}

func (e *CredentialsError) Error() string {
	return fmt.Sprintf("credentials %q could not be obtained: %v", e.Key, e.Err)
}

func (e *CredentialsError) Unwrap() error { return e.Err }
