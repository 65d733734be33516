package armclient

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// Call sends a request and, when the server answers with a long-running
// operation, polls it to the end the way ARM clients do:
//   - Azure-AsyncOperation: poll its status document until Succeeded,
//     Failed or Canceled, then GET the resource (PUT, PATCH) or the
//     Location (POST) for the final body;
//   - Location alone (DELETE, some POSTs): poll it while it answers 202.
//
// It returns the final body (nil when there is none).
func (c *Client) Call(ctx context.Context, method, path string, body any) (json.RawMessage, error) {
	return c.CallWatching(ctx, method, path, body, nil)
}

// CallWatching is Call, handing each status document polled (the
// operation's progress) to watch, when not nil.
func (c *Client) CallWatching(ctx context.Context, method, path string, body any, watch func(json.RawMessage)) (json.RawMessage, error) {
	resp, err := c.Do(ctx, method, path, body)
	if err != nil {
		return nil, err
	}
	async := resp.Header.Get("Azure-AsyncOperation")
	location := resp.Header.Get("Location")
	accepted := resp.StatusCode == http.StatusCreated || resp.StatusCode == http.StatusAccepted
	switch {
	case accepted && async != "":
		if err := c.pollStatus(ctx, async, resp.Header, watch); err != nil {
			return nil, err
		}
		switch {
		case method == http.MethodPut || method == http.MethodPatch:
			return c.get(ctx, path)
		case location != "":
			return c.pollLocation(ctx, location, resp.Header)
		}
		return nonEmpty(resp.Body), nil
	case resp.StatusCode == http.StatusAccepted && location != "":
		return c.pollLocation(ctx, location, resp.Header)
	}
	return nonEmpty(resp.Body), nil
}

func (c *Client) get(ctx context.Context, path string) (json.RawMessage, error) {
	resp, err := c.Do(ctx, http.MethodGet, path, nil)
	if err != nil {
		return nil, err
	}
	return nonEmpty(resp.Body), nil
}

func nonEmpty(b []byte) json.RawMessage {
	if len(strings.TrimSpace(string(b))) == 0 {
		return nil
	}
	return json.RawMessage(b)
}

// operationStatus is ARM's async operation document.
type operationStatus struct {
	Status string `json:"status"`
	Error  *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func (c *Client) pollStatus(ctx context.Context, statusURL string, h http.Header, watch func(json.RawMessage)) error {
	for {
		if err := c.wait(ctx, h); err != nil {
			return err
		}
		resp, err := c.Do(ctx, http.MethodGet, statusURL, nil)
		if err != nil {
			return fmt.Errorf("polling operation: %w", err)
		}
		var st operationStatus
		if err := json.Unmarshal(resp.Body, &st); err != nil {
			return fmt.Errorf("polling operation: status document is not JSON: %w", err)
		}
		if watch != nil {
			watch(resp.Body)
		}
		switch strings.ToLower(st.Status) {
		case "succeeded":
			return nil
		case "failed", "canceled", "cancelled":
			e := &Error{StatusCode: resp.StatusCode, Code: "Operation" + st.Status, Message: "the operation " + strings.ToLower(st.Status)}
			if st.Error != nil {
				e.Code, e.Message = st.Error.Code, oneLine(st.Error.Message)
			}
			return e
		case "":
			return fmt.Errorf("polling operation: status document has no status")
		}
		// A status URL may move; ARM sends the current one with each poll.
		if next := resp.Header.Get("Azure-AsyncOperation"); next != "" {
			statusURL = next
		}
		h = resp.Header
	}
}

func (c *Client) pollLocation(ctx context.Context, location string, h http.Header) (json.RawMessage, error) {
	for {
		if err := c.wait(ctx, h); err != nil {
			return nil, err
		}
		resp, err := c.Do(ctx, http.MethodGet, location, nil)
		if err != nil {
			return nil, fmt.Errorf("polling operation: %w", err)
		}
		if resp.StatusCode != http.StatusAccepted {
			return nonEmpty(resp.Body), nil
		}
		if next := resp.Header.Get("Location"); next != "" {
			location = next
		}
		h = resp.Header
	}
}

func (c *Client) wait(ctx context.Context, h http.Header) error {
	t := time.NewTimer(retryAfter(h, c.opts.PollInterval, c.opts.MaxPollWait))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return fmt.Errorf("waiting for the operation: %w", ctx.Err())
	case <-t.C:
		return nil
	}
}

// List GETs a collection and follows nextLink to the end.
func (c *Client) List(ctx context.Context, path string) ([]json.RawMessage, error) {
	var all []json.RawMessage
	seen := map[string]bool{}
	for next := path; next != ""; {
		if seen[next] {
			return nil, fmt.Errorf("list: nextLink loops back to %s", redact(next))
		}
		seen[next] = true
		resp, err := c.Do(ctx, http.MethodGet, next, nil)
		if err != nil {
			return nil, err
		}
		var page struct {
			Value    []json.RawMessage `json:"value"`
			NextLink string            `json:"nextLink"`
		}
		if err := json.Unmarshal(resp.Body, &page); err != nil {
			return nil, fmt.Errorf("list: response is not a {\"value\":[...]} page: %w", err)
		}
		all = append(all, page.Value...)
		next = page.NextLink
	}
	if all == nil {
		all = []json.RawMessage{}
	}
	return all, nil
}
