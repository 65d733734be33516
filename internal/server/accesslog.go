package server

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/arcacache/arca/internal/redact"
	"github.com/arcacache/arca/internal/registry"
)

// accessLog logs requests. With on (--access-log), every request leaves
// one line at info level: method, route, repository, status, bytes,
// duration, cache result, rule and upstream, with the query string (so a
// mirror's ns shows) redacted of anything credential-like. Headers, and so
// Authorization, are never logged. Off, only debug logging sees requests,
// and server errors are warnings.
func accessLog(log *slog.Logger, on bool, route func(*http.Request) string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		ctx, ri := registry.WithRequestInfo(r.Context())
		r = r.WithContext(ctx)
		sw := &statusWriter{ResponseWriter: w}
		aborted := true
		// Deferred, so that an aborted response (a blob transfer cut on
		// purpose) is logged too before the panic goes on to net/http.
		defer func() {
			status := sw.status
			if status == 0 {
				status = http.StatusOK
			}
			lvl := slog.LevelDebug
			switch {
			case on:
				lvl = slog.LevelInfo
			case status >= 500 || aborted:
				lvl = slog.LevelWarn
			}
			if !log.Enabled(ctx, lvl) {
				return
			}
			attrs := []slog.Attr{
				slog.String("method", r.Method), slog.String("route", route(r)), slog.String("path", r.URL.Path),
				slog.String("repository", ri.Repo), slog.Int("status", status), slog.Int64("bytes", sw.bytes),
				slog.Float64("duration_ms", float64(time.Since(start).Microseconds())/1000),
			}
			if q := redact.Query(r.URL.RawQuery); q != "" {
				attrs = append(attrs, slog.String("query", q))
			}
			if c := sw.Header().Get("X-Arca-Cache"); c != "" {
				attrs = append(attrs, slog.String("cache", c))
			}
			if ri.Rule != "" {
				attrs = append(attrs, slog.String("rule", ri.Rule), slog.String("upstream", ri.Upstream))
			}
			if aborted {
				attrs = append(attrs, slog.Bool("aborted", true))
			}
			attrs = append(attrs, slog.String("remote", r.RemoteAddr))
			log.LogAttrs(ctx, lvl, "request", attrs...)
		}()
		h.ServeHTTP(sw, r)
		aborted = false
	})
}
