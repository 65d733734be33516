package upstream

import (
	"context"
	"net/http"
	"net/url"
)

// CheckLogin checks that creds (nil: anonymous) can log in to host: GET
// /v2/ through the challenge flow, with a throwaway token cache. It
// returns nil when the login works and an *Error otherwise; a rejected
// login is a 401 with a message saying so.
func (c *Client) CheckLogin(ctx context.Context, host string, creds Credentials) error {
	p, err := c.prepare(Repo{Host: host, Path: "login-check"})
	if err != nil {
		return err
	}
	const op = "login"
	info := &reqInfo{upstream: CanonicalHost(host), apiHost: p.apiHost, creds: creds}
	ctx = context.WithValue(ctx, infoKey{}, info)
	u := &url.URL{Scheme: p.scheme, Host: p.apiHost, Path: "/v2/"}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return &Error{Op: op, Repo: host, Err: err}
	}
	resp, err := c.newAuthClient(newTokenCache()).Do(req)
	if err != nil {
		return authError(op, host, withHint(err, host))
	}
	if resp.StatusCode == http.StatusOK {
		drainClose(resp.Body)
		return nil
	}
	e := statusError(op, host, resp)
	if e.StatusCode == http.StatusUnauthorized {
		if creds == nil {
			e.Message = "the registry requires credentials and none are configured"
		} else {
			e.Message = "the registry rejected the username or password"
		}
	}
	return e
}
