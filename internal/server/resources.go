package server

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/arcacache/arca/internal/config"
	"github.com/arcacache/arca/internal/errcode"
	"github.com/arcacache/arca/internal/registry"
)

// LimitOptions bound what one client, one upload and a full disk can do.
type LimitOptions struct {
	// MaxBlobSize is the largest blob one upload may stage.
	MaxBlobSize int64
	// MinFreeSpace on the data directory: below it /readyz fails and
	// writes are refused (reads go on).
	MinFreeSpace config.FreeSpace
	// BodyIdleTimeout fails a request body that sends nothing for this
	// long; BodyMinRate (bytes/s) one that sends less than that over any
	// BodyIdleTimeout window.
	BodyIdleTimeout time.Duration
	BodyMinRate     int64
	// MaxUploadsPerClient caps the upload requests (POST, PATCH, PUT of
	// blob uploads) in progress from one client address.
	MaxUploadsPerClient int
}

// guard wraps the handler tree with the limits.
type guard struct {
	o     LimitOptions
	space *diskSpace

	mu      sync.Mutex
	uploads map[string]int // client address -> upload requests in progress
}

func newGuard(o LimitOptions, dataDir string, reg prometheus.Registerer) *guard {
	return &guard{o: o, space: newDiskSpace(dataDir, o.MinFreeSpace, reg), uploads: map[string]int{}}
}

func (g *guard) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil && r.Body != http.NoBody && g.o.BodyIdleTimeout > 0 {
			// A copy: net/http looks at its own request's Body type to
			// decide how to finish an unread body.
			r = r.WithContext(r.Context())
			r.Body = &pacedBody{ReadCloser: r.Body, rc: http.NewResponseController(w),
				idle: g.o.BodyIdleTimeout, minRate: g.o.BodyMinRate, windowStart: time.Now()}
		}
		if !strings.HasPrefix(r.URL.Path, "/v2/") || !isWrite(r.Method) {
			h.ServeHTTP(w, r)
			return
		}
		if free, need, low := g.space.low(); low {
			errcode.Write(w, r, errcode.New(errcode.Denied, fmt.Sprintf(
				"the registry is low on storage (%s free, below the %s it keeps free): writes are refused until space is freed; pulls of stored content still work",
				config.FormatSize(free), config.FormatSize(need))).WithStatus(http.StatusInsufficientStorage))
			return
		}
		if kind := registry.RouteName(r.URL.EscapedPath()); kind == "upload" || kind == "uploads" {
			client := clientAddr(r)
			if !g.acquire(client) {
				w.Header().Set("Retry-After", "1")
				errcode.Write(w, r, errcode.New(errcode.TooManyRequests, fmt.Sprintf(
					"too many uploads in progress from %s (at most %d at once)", client, g.o.MaxUploadsPerClient)))
				return
			}
			defer g.release(client)
		}
		h.ServeHTTP(w, r)
	})
}

func isWrite(method string) bool {
	return method == http.MethodPost || method == http.MethodPut || method == http.MethodPatch
}

// clientAddr is the connection's IP address (a proxy's X-Forwarded-For is
// not trusted: any client can send one).
func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func (g *guard) acquire(client string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.o.MaxUploadsPerClient > 0 && g.uploads[client] >= g.o.MaxUploadsPerClient {
		return false
	}
	g.uploads[client]++
	return true
}

func (g *guard) release(client string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.uploads[client]--; g.uploads[client] <= 0 {
		delete(g.uploads, client)
	}
}

// errSlowBody: the client sends its request body too slowly.
var errSlowBody = errors.New("request body too slow")

// pacedBody fails a request body that stalls for idle, or that delivers
// less than minRate bytes/s over a window of idle: a client trickling a
// byte a second must not hold a connection and a staging file forever.
type pacedBody struct {
	io.ReadCloser
	rc          *http.ResponseController
	idle        time.Duration
	minRate     int64
	windowStart time.Time
	windowBytes int64
}

func (b *pacedBody) Read(p []byte) (int, error) {
	_ = b.rc.SetReadDeadline(time.Now().Add(b.idle))
	n, err := b.ReadCloser.Read(p)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return n, b.slow(fmt.Errorf("%w: no data for %s", errSlowBody, b.idle))
	}
	// Cleared at once: a deadline left behind would fire in net/http's
	// background read once the body is done, and cancel the request.
	_ = b.rc.SetReadDeadline(time.Time{})
	b.windowBytes += int64(n)
	if el := time.Since(b.windowStart); el >= b.idle && err == nil {
		if float64(b.windowBytes) < float64(b.minRate)*el.Seconds() {
			return n, b.slow(fmt.Errorf("%w: %d bytes in %s, below the minimum of %d bytes/s", errSlowBody, b.windowBytes, el.Round(time.Millisecond), b.minRate))
		}
		b.windowStart, b.windowBytes = time.Now(), 0
	}
	return n, err
}

// slow gives up on the body: the deadline stays in the past so that
// net/http, finishing the request, does not wait for the rest of it
// either (the connection closes after the answer).
func (b *pacedBody) slow(err error) error {
	_ = b.rc.SetReadDeadline(time.Now())
	return err
}

// diskSpace watches free space on the data directory.
type diskSpace struct {
	dir      string
	min      config.FreeSpace
	freeG    prometheus.Gauge
	lowG     prometheus.Gauge
	statfs   func(path string, st *syscall.Statfs_t) error
	disabled bool
}

func newDiskSpace(dir string, min config.FreeSpace, reg prometheus.Registerer) *diskSpace {
	d := &diskSpace{dir: dir, min: min, statfs: syscall.Statfs, disabled: min.Bytes == 0 && min.Percent == 0,
		freeG: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "arca_data_free_bytes", Help: "Free space on the file system of --data-dir, as last checked.",
		}),
		lowG: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "arca_data_low_space", Help: "1 while free space on --data-dir is below --min-free-space: /readyz fails and pushes are refused (507).",
		}),
	}
	reg.MustRegister(d.freeG, d.lowG)
	return d
}

// low checks free space now (statfs is cheap) and reports whether it is
// below the threshold.
func (d *diskSpace) low() (free, need int64, low bool) {
	var st syscall.Statfs_t
	if err := d.statfs(d.dir, &st); err != nil {
		return 0, 0, false // not knowing is no reason to refuse service
	}
	free = int64(st.Bavail) * int64(st.Bsize)
	need = d.min.Threshold(int64(st.Blocks) * int64(st.Bsize))
	low = !d.disabled && free < need
	d.freeG.Set(float64(free))
	if low {
		d.lowG.Set(1)
	} else {
		d.lowG.Set(0)
	}
	return free, need, low
}
