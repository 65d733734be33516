package server

import (
	"net/http"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/arcacache/arca/internal/tracing"
)

// traced gives each request a server span ("GET manifest"), a child of
// the client's span when it sent a W3C traceparent header. Code below
// finds the tracer through that span (tracing.Start). Only the path goes
// into the span, never the query (it may carry credentials).
func traced(tp trace.TracerProvider, route func(*http.Request) string, h http.Handler) http.Handler {
	if tp == nil {
		return h
	}
	if _, off := tp.(noop.TracerProvider); off {
		return h
	}
	tracer := tracing.Tracer(tp)
	prop := propagation.TraceContext{}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := route(r)
		ctx := prop.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		ctx, span := tracer.Start(ctx, r.Method+" "+name, trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(
			attribute.String("http.request.method", r.Method), attribute.String("http.route", name),
			attribute.String("url.path", r.URL.Path)))
		defer span.End()
		sw := &statusWriter{ResponseWriter: w}
		h.ServeHTTP(sw, r.WithContext(ctx))
		status := sw.status
		if status == 0 {
			status = http.StatusOK
		}
		span.SetAttributes(attribute.Int("http.response.status_code", status), attribute.Int64("http.response.body.size", sw.bytes))
		if status >= 500 {
			span.SetStatus(codes.Error, http.StatusText(status))
		}
	})
}
