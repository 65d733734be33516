package armclient

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeARM answers like ARM does for cacheRules: PUT 201 + Azure-AsyncOperation
// (absolute URL on another host name, as ARM sends management.azure.com),
// "Creating" once then "Succeeded"; DELETE 202 + Location, 202 once then 200.
type fakeARM struct {
	mu    sync.Mutex
	log   []string
	polls map[string]int
	fail  bool
}

func (f *fakeARM) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	body, _ := io.ReadAll(r.Body)
	f.log = append(f.log, r.Method+" "+r.URL.RequestURI()+" "+r.Header.Get("Authorization")+" "+string(body))
	const rule = "/prefix/subscriptions/s/resourceGroups/g/providers/Microsoft.ContainerRegistry/registries/r/cacheRules/rule1"
	switch {
	case r.Method == http.MethodPut && r.URL.Path == rule:
		w.Header().Set("Azure-AsyncOperation", "https://management.azure.com/prefix"+strings.TrimPrefix(rule, "/prefix")+"/operationStatuses/op1?api-version=x&t=sig")
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, `{"properties":{"provisioningState":"Creating"}}`)
	case strings.HasSuffix(r.URL.Path, "/operationStatuses/op1"):
		f.polls["op1"]++
		switch {
		case f.polls["op1"] == 1:
			io.WriteString(w, `{"status":"Creating"}`)
		case f.fail:
			io.WriteString(w, `{"status":"Failed","error":{"code":"InternalError","message":"boom\nsecond line"}}`)
		default:
			io.WriteString(w, `{"status":"Succeeded"}`)
		}
	case r.Method == http.MethodGet && r.URL.Path == rule:
		io.WriteString(w, `{"name":"rule1","properties":{"provisioningState":"Succeeded"}}`)
	case r.Method == http.MethodDelete && r.URL.Path == rule:
		w.Header().Set("Location", "https://management.azure.com/prefix/subscriptions/s/providers/Microsoft.ContainerRegistry/locations/x/operationResults/del1?api-version=x")
		w.Header().Set("Retry-After", "0")
		w.WriteHeader(http.StatusAccepted)
	case strings.HasSuffix(r.URL.Path, "/operationResults/del1"):
		f.polls["del1"]++
		if f.polls["del1"] == 1 {
			w.WriteHeader(http.StatusAccepted)
			return
		}
		w.WriteHeader(http.StatusOK)
	case r.URL.Path == "/prefix/list":
		if r.URL.Query().Get("page") == "2" {
			io.WriteString(w, `{"value":[{"name":"c"}]}`)
			return
		}
		io.WriteString(w, `{"value":[{"name":"a"},{"name":"b"}],"nextLink":"http://elsewhere.example/prefix/list?page=2"}`)
	default:
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"error":{"code":"ResourceNotFound","message":"The cache rule rule2 could not be found."},"status":"Failed"}`)
	}
}

func newTestClient(t *testing.T, f *fakeARM) *Client {
	t.Helper()
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	c, err := New(srv.URL+"/prefix/", "tok", Options{PollInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

const rulePath = "/subscriptions/s/resourceGroups/g/providers/Microsoft.ContainerRegistry/registries/r/cacheRules/rule1?api-version=2025-09-01-preview"

func TestCallPutPollsAsyncOperation(t *testing.T) {
	f := &fakeARM{polls: map[string]int{}}
	c := newTestClient(t, f)
	out, err := c.Call(context.Background(), http.MethodPut, rulePath, map[string]any{"properties": map[string]string{"sourceRepository": "a/<b>"}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), `"Succeeded"`) {
		t.Fatalf("final body = %s, want the GET after success", out)
	}
	want := []string{
		"PUT /prefix" + rulePath + ` Bearer tok {"properties":{"sourceRepository":"a/<b>"}}`,
		"GET /prefix" + strings.TrimSuffix(rulePath, "?api-version=2025-09-01-preview") + "/operationStatuses/op1?api-version=x&t=sig Bearer tok ",
		"GET /prefix" + strings.TrimSuffix(rulePath, "?api-version=2025-09-01-preview") + "/operationStatuses/op1?api-version=x&t=sig Bearer tok ",
		"GET /prefix" + rulePath + " Bearer tok ",
	}
	if strings.Join(f.log, "\n") != strings.Join(want, "\n") {
		t.Fatalf("requests:\n%s\nwant:\n%s", strings.Join(f.log, "\n"), strings.Join(want, "\n"))
	}
}

func TestCallFailedOperation(t *testing.T) {
	f := &fakeARM{polls: map[string]int{}, fail: true}
	c := newTestClient(t, f)
	_, err := c.Call(context.Background(), http.MethodPut, rulePath, json.RawMessage(`{}`))
	var ae *Error
	if !errors.As(err, &ae) || err.Error() != "(InternalError) boom second line" {
		t.Fatalf("error = %v", err)
	}
}

func TestCallDeletePollsLocation(t *testing.T) {
	f := &fakeARM{polls: map[string]int{}}
	c := newTestClient(t, f)
	out, err := c.Call(context.Background(), http.MethodDelete, rulePath, nil)
	if err != nil || out != nil {
		t.Fatalf("delete = %s, %v", out, err)
	}
	if f.polls["del1"] != 2 {
		t.Fatalf("location polled %d times, want 2", f.polls["del1"])
	}
}

func TestErrorsAndList(t *testing.T) {
	f := &fakeARM{polls: map[string]int{}}
	c := newTestClient(t, f)
	_, err := c.Call(context.Background(), http.MethodGet, "/nosuch", nil)
	var ae *Error
	if !errors.As(err, &ae) || ae.StatusCode != 404 || err.Error() != "(ResourceNotFound) The cache rule rule2 could not be found." {
		t.Fatalf("error = %v", err)
	}
	items, err := c.List(context.Background(), "/list")
	if err != nil || len(items) != 3 {
		t.Fatalf("list = %d items, %v", len(items), err)
	}
	for _, l := range f.log {
		if !strings.Contains(l, "Bearer tok") {
			t.Fatalf("request without token: %s", l)
		}
	}
}

func TestNewError(t *testing.T) {
	tests := []struct {
		status int
		body   string
		want   string
	}{
		{400, `{"error":{"code":"EnforceDockerAuthentication","message":"Cannot create cache rule pointing to Docker Hub without credentials."}}`,
			"(EnforceDockerAuthentication) Cannot create cache rule pointing to Docker Hub without credentials."},
		{401, `{"code":"AuthenticationFailed","message":"no token"}`, "(AuthenticationFailed) no token"},
		{502, "<html>\n<body>Bad gateway</body></html>", "HTTP 502 Bad Gateway: <html> <body>Bad gateway</body></html>"},
		{500, "", "HTTP 500 Internal Server Error"},
		{409, `{"error":{"code":"Conflict"}}`, "(Conflict) HTTP 409 Conflict"},
	}
	for _, tt := range tests {
		if got := newError(tt.status, []byte(tt.body)).Error(); got != tt.want {
			t.Errorf("newError(%d, %q) = %q, want %q", tt.status, tt.body, got, tt.want)
		}
	}
}

func TestNewRejectsBadEndpoints(t *testing.T) {
	for _, ep := range []string{"", "localhost:5000", "ftp://x", "http://u:p@host", "http://h/?q=1"} {
		if _, err := New(ep, "", Options{}); err == nil {
			t.Errorf("New(%q) accepted", ep)
		}
	}
}
