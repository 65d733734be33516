package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// Raw HTTP access to /v2/, for what clients hide: status codes, error
// bodies, headers, pagination.

var httpc = &http.Client{Timeout: 5 * time.Minute}

// rawResp is a fully read response.
type rawResp struct {
	Status int
	Header http.Header
	Body   []byte
}

func (r rawResp) String() string {
	b := r.Body
	if len(b) > 512 {
		b = append(b[:512:512], "..."...)
	}
	return fmt.Sprintf("%d %v %s", r.Status, r.Header, b)
}

// errorCodes returns the OCI error codes in the body.
func (r rawResp) errorCodes() []string {
	var e struct {
		Errors []struct{ Code string } `json:"errors"`
	}
	_ = json.Unmarshal(r.Body, &e)
	var out []string
	for _, x := range e.Errors {
		out = append(out, x.Code)
	}
	return out
}

func (r rawResp) hasCode(code string) bool {
	for _, c := range r.errorCodes() {
		if c == code {
			return true
		}
	}
	return false
}

func do(t testing.TB, method, u string, hdr map[string]string, body []byte) rawResp {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := httpc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, u, err)
	}
	return rawResp{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// resolve makes a Location header absolute against the server.
func (a *arca) resolve(t testing.TB, loc string) string {
	t.Helper()
	base, _ := url.Parse(a.URL() + "/")
	u, err := base.Parse(loc)
	if err != nil {
		t.Fatalf("bad Location %q: %v", loc, err)
	}
	return u.String()
}

// pushBlob uploads b to repo with POST then PUT (monolithic).
func (a *arca) pushBlob(t testing.TB, repo string, b []byte) string {
	t.Helper()
	r := do(t, "POST", a.URL()+"/v2/"+repo+"/blobs/uploads/", nil, nil)
	if r.Status != http.StatusAccepted {
		t.Fatalf("POST upload %s: %s", repo, r)
	}
	u := a.resolve(t, r.Header.Get("Location"))
	sep := "?"
	if strings.Contains(u, "?") {
		sep = "&"
	}
	d := sha(b)
	r = do(t, "PUT", u+sep+"digest="+url.QueryEscape(d), map[string]string{"Content-Type": "application/octet-stream"}, b)
	if r.Status != http.StatusCreated {
		t.Fatalf("PUT upload %s %s: %s", repo, d, r)
	}
	return d
}

// pushManifest PUTs a manifest by reference and returns the response.
func (a *arca) pushManifest(t testing.TB, repo, ref, mediaType string, b []byte) rawResp {
	t.Helper()
	return do(t, "PUT", a.URL()+"/v2/"+repo+"/manifests/"+ref, map[string]string{"Content-Type": mediaType}, b)
}

// pushImage uploads every blob and the manifest of im under tag.
func (a *arca) pushImage(t testing.TB, repo, tag string, im *testImage) {
	t.Helper()
	for _, b := range im.blobs() {
		a.pushBlob(t, repo, b)
	}
	if r := a.pushManifest(t, repo, tag, mtOCIManifest, im.Manifest); r.Status != http.StatusCreated {
		t.Fatalf("PUT manifest %s:%s: %s", repo, tag, r)
	}
}

// checkBlob GETs a blob and checks it is exactly want.
func (a *arca) checkBlob(t testing.TB, repo string, want []byte) {
	t.Helper()
	d := sha(want)
	r := do(t, "GET", a.URL()+"/v2/"+repo+"/blobs/"+d, nil, nil)
	if r.Status != http.StatusOK {
		t.Errorf("GET blob %s/%s: %s", repo, d, r)
		return
	}
	if sha(r.Body) != d {
		t.Errorf("GET blob %s/%s: body digest %s, %d bytes, want %d", repo, d, sha(r.Body), len(r.Body), len(want))
	}
}

// tagsPaged lists tags n at a time following the Link header, and returns
// the tags and the number of pages.
func (a *arca) tagsPaged(t testing.TB, repo string, n int) ([]string, int) {
	t.Helper()
	next := fmt.Sprintf("%s/v2/%s/tags/list?n=%d", a.URL(), repo, n)
	var all []string
	pages := 0
	for next != "" {
		r := do(t, "GET", next, nil, nil)
		if r.Status != http.StatusOK {
			t.Fatalf("GET %s: %s", next, r)
		}
		var body struct {
			Name string   `json:"name"`
			Tags []string `json:"tags"`
		}
		if err := json.Unmarshal(r.Body, &body); err != nil {
			t.Fatalf("tags list body %q: %v", r.Body, err)
		}
		if body.Name != repo {
			t.Errorf("tags list name = %q, want %q", body.Name, repo)
		}
		if len(body.Tags) > n {
			t.Errorf("page of %d tags for n=%d", len(body.Tags), n)
		}
		all = append(all, body.Tags...)
		pages++
		if pages > 1000 {
			t.Fatal("tags pagination does not end")
		}
		next = ""
		if link := r.Header.Get("Link"); link != "" {
			next = a.resolve(t, parseLink(t, link))
		}
	}
	return all, pages
}

// parseLink extracts the URL of a `<url>; rel="next"` Link header.
func parseLink(t testing.TB, h string) string {
	t.Helper()
	start, end := strings.Index(h, "<"), strings.Index(h, ">")
	if start < 0 || end < start || !strings.Contains(h[end:], `rel="next"`) {
		t.Fatalf("malformed Link header %q", h)
	}
	return h[start+1 : end]
}
