package server

import (
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/arcacache/arca/internal/buildinfo"
	"github.com/arcacache/arca/internal/gc"
)

type httpMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	bytes    *prometheus.CounterVec
}

func newHTTPMetrics(reg prometheus.Registerer) *httpMetrics {
	m := &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "arca_http_requests_total", Help: "HTTP requests by route, method and status.",
		}, []string{"route", "method", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "arca_http_request_duration_seconds", Help: "HTTP request duration by route and method.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}, []string{"route", "method"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "arca_http_response_bytes_total", Help: "Response body bytes sent, by route.",
		}, []string{"route"}),
	}
	reg.MustRegister(m.requests, m.duration, m.bytes)
	return m
}

// registerBuildInfo exposes arca_build_info (always 1), labelled with what
// the binary is, so dashboards can tell versions apart across a rollout.
func registerBuildInfo(reg prometheus.Registerer) {
	i := buildinfo.Read()
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "arca_build_info", Help: "arca's build: module version, VCS commit, commit date and Go version (value 1).",
		ConstLabels: prometheus.Labels{"version": i.Version, "commit": i.Commit, "date": i.Date, "goversion": i.GoVersion},
	})
	g.Set(1)
	reg.MustRegister(g)
}

// instrument wraps h, labelling each request with route(r).
func (m *httpMetrics) instrument(route func(*http.Request) string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		h.ServeHTTP(sw, r)
		name := route(r)
		status := sw.status
		if status == 0 {
			status = http.StatusOK
		}
		m.requests.WithLabelValues(name, r.Method, strconv.Itoa(status)).Inc()
		m.duration.WithLabelValues(name, r.Method).Observe(time.Since(start).Seconds())
		if sw.bytes > 0 {
			m.bytes.WithLabelValues(name).Add(float64(sw.bytes))
		}
	})
}

// statusWriter records the status and body size. It forwards ReadFrom so
// that blob bodies still go out with sendfile, and Flush for streaming.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}

func (w *statusWriter) ReadFrom(r io.Reader) (int64, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	var n int64
	var err error
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(r)
	} else {
		n, err = io.Copy(w.ResponseWriter, r)
	}
	w.bytes += n
	return n, err
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

type gcMetrics struct {
	runs        *prometheus.CounterVec
	duration    prometheus.Histogram
	reclaimed   prometheus.Counter
	deleted     *prometheus.CounterVec
	lastSuccess prometheus.Gauge
}

func newGCMetrics(reg prometheus.Registerer) *gcMetrics {
	m := &gcMetrics{
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "arca_gc_runs_total", Help: "Garbage collection runs by result (success, failed, busy: another replica was running), dry runs excluded.",
		}, []string{"result"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "arca_gc_duration_seconds", Help: "Duration of garbage collection runs that ran (success or failed).",
			Buckets: prometheus.ExponentialBuckets(0.01, 4, 10),
		}),
		reclaimed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "arca_gc_reclaimed_bytes_total", Help: "Blob bytes deleted by garbage collection (manifests' bytes included).",
		}),
		deleted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "arca_gc_deleted_total", Help: "Items deleted by garbage collection, by kind (blob, manifest, upload, upload_part).",
		}, []string{"kind"}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "arca_gc_last_success_timestamp_seconds", Help: "When the last successful garbage collection run ended (Unix time; 0: none since start).",
		}),
	}
	for _, r := range []string{"success", "failed", "busy"} {
		m.runs.WithLabelValues(r)
	}
	for _, k := range []string{"blob", "manifest", "upload", "upload_part"} {
		m.deleted.WithLabelValues(k)
	}
	reg.MustRegister(m.runs, m.duration, m.reclaimed, m.deleted, m.lastSuccess)
	return m
}

func (m *gcMetrics) observe(res gc.Result, err error) {
	if res.DryRun {
		return
	}
	// What a failed run deleted before it failed is deleted all the same.
	m.deleted.WithLabelValues("manifest").Add(float64(res.Manifests))
	m.deleted.WithLabelValues("upload").Add(float64(res.Uploads))
	m.deleted.WithLabelValues("upload_part").Add(float64(res.UploadParts))
	if st := res.Store; st != nil {
		m.reclaimed.Add(float64(st.BlobBytes))
		m.deleted.WithLabelValues("blob").Add(float64(st.Blobs))
		m.deleted.WithLabelValues("upload_part").Add(float64(st.StrayParts))
	}
	switch {
	case errors.Is(err, gc.ErrBusy):
		m.runs.WithLabelValues("busy").Inc()
		return
	case err != nil:
		m.runs.WithLabelValues("failed").Inc()
	default:
		m.runs.WithLabelValues("success").Inc()
		m.lastSuccess.Set(float64(time.Now().Unix()))
	}
	m.duration.Observe(res.Duration.Seconds())
}
