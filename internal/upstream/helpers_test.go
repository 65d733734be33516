package upstream_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/arcacache/arca/internal/testutil/upstreamreg"
	"github.com/arcacache/arca/internal/upstream"
)

// newClient builds a client that may use plain HTTP to hosts, with fast
// retries, logging to the test output.
func newClient(t *testing.T, o upstream.Options, hosts ...string) (*upstream.Client, *prometheus.Registry) {
	t.Helper()
	o.Insecure = append(o.Insecure, hosts...)
	if o.RetryBackoff == 0 {
		o.RetryBackoff = 10 * time.Millisecond
	}
	reg := prometheus.NewRegistry()
	o.Registerer = reg
	o.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	c, err := upstream.New(o)
	if err != nil {
		t.Fatal(err)
	}
	return c, reg
}

// credsFor returns the Repo for path on host with reg's account (if any),
// under credential key "cs"; calls counts credential resolutions.
func credsFor(reg *upstreamreg.Registry, host, path string, calls *atomic.Int64) upstream.Repo {
	r := upstream.Repo{Host: host, Path: path}
	if reg.Username != "" {
		r.CredKey = "cs"
		r.Creds = func(context.Context) (string, string, error) {
			if calls != nil {
				calls.Add(1)
			}
			return reg.Username, reg.Password, nil
		}
	}
	return r
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// readBlob fetches a blob and checks bytes and size.
func readBlob(t *testing.T, c *upstream.Client, r upstream.Repo, want []byte) {
	t.Helper()
	rc, size, err := c.GetBlob(t.Context(), r, digest.FromBytes(want))
	if err != nil {
		t.Fatalf("GetBlob: %v", err)
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("GetBlob read: %v", err)
	}
	if !bytes.Equal(got, want) || size != int64(len(want)) {
		t.Fatalf("GetBlob: %d bytes (size %d), equal=%v; want %d", len(got), size, bytes.Equal(got, want), len(want))
	}
}

func asError(t *testing.T, err error) *upstream.Error {
	t.Helper()
	var e *upstream.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not an *upstream.Error", err, err)
	}
	return e
}

func allTags(t *testing.T, c *upstream.Client, r upstream.Repo) (tags []string, pages []int) {
	t.Helper()
	err := c.Tags(t.Context(), r, func(page []string) error {
		tags = append(tags, page...)
		pages = append(pages, len(page))
		return nil
	})
	if err != nil {
		t.Fatalf("Tags: %v", err)
	}
	sort.Strings(tags)
	return tags, pages
}

func countStatus(entries []upstreamreg.LogEntry, status int, pathSubstring string) int {
	n := 0
	for _, e := range entries {
		if e.Status == status && strings.Contains(e.URI, pathSubstring) {
			n++
		}
	}
	return n
}

// metricValue sums the samples of metric name whose labels include want.
func metricValue(t *testing.T, reg *prometheus.Registry, name string, want map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if hasLabels(m, want) {
				sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
	}
	return sum
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	n := 0
	for _, lp := range m.GetLabel() {
		if v, ok := want[lp.GetName()]; ok && v == lp.GetValue() {
			n++
		}
	}
	return n == len(want)
}
