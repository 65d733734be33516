package arcaproc

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

func TestWaitReady(t *testing.T) {
	var status atomic.Int32 // the handler runs on the server's goroutines
	status.Store(http.StatusServiceUnavailable)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(int(status.Load())) }))
	defer srv.Close()

	if err := WaitReady(srv.URL, 200*time.Millisecond, nil); err == nil {
		t.Fatal("503 counted as ready")
	}
	exited := make(chan struct{})
	close(exited)
	if err := WaitReady(srv.URL, time.Second, exited); !errors.Is(err, ErrExited) {
		t.Fatalf("exited process: %v, want ErrExited", err)
	}
	status.Store(http.StatusUnauthorized)
	if err := WaitReady(srv.URL, time.Second, nil, http.StatusOK, http.StatusUnauthorized); err != nil {
		t.Fatalf("401 with 401 accepted: %v", err)
	}
	if err := WaitReady(srv.URL, 200*time.Millisecond, nil); err == nil {
		t.Fatal("401 counted as ready by default")
	}
}

func TestRepoRoot(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("RepoRoot %s has no go.mod: %v", root, err)
	}
}
