// Package tracing sets up OpenTelemetry tracing from the standard OTEL_*
// environment and starts spans. Tracing is off unless an OTLP endpoint is
// configured (OTEL_EXPORTER_OTLP_ENDPOINT or ..._TRACES_ENDPOINT); spans
// then go out over OTLP/HTTP, batched.
//
// Code below the server finds the tracer through the span in its context
// (Start), so no package holds a global provider: without a span in the
// context, as in tests or with tracing off, Start is a no-op.
package tracing

import (
	"context"
	"fmt"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// instrumentation names arca's spans.
const instrumentation = "github.com/arcacache/arca"

// Setup returns the tracer provider the OTEL_* environment asks for (read
// through getenv), and a shutdown that flushes spans still buffered. With
// no OTLP endpoint, or OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none,
// it is a no-op provider.
func Setup(ctx context.Context, getenv func(string) string, version string) (trace.TracerProvider, func(context.Context) error, error) {
	off := func(context.Context) error { return nil }
	if strings.EqualFold(getenv("OTEL_SDK_DISABLED"), "true") || strings.EqualFold(getenv("OTEL_TRACES_EXPORTER"), "none") ||
		(getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" && getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "") {
		return noop.NewTracerProvider(), off, nil
	}
	if p := getenv("OTEL_EXPORTER_OTLP_PROTOCOL"); p != "" && p != "http/protobuf" {
		return nil, nil, fmt.Errorf("tracing: OTEL_EXPORTER_OTLP_PROTOCOL %q: arca exports http/protobuf only", p)
	}
	// The exporter reads the endpoint, headers, timeout and TLS settings
	// from the environment itself; the SDK reads the sampler and batching.
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("tracing: %w", err)
	}
	// Later detectors win: OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES
	// override the defaults.
	res, err := resource.New(ctx, resource.WithTelemetrySDK(),
		resource.WithAttributes(semconv.ServiceName("arca"), semconv.ServiceVersion(version)), resource.WithFromEnv())
	if err != nil {
		return nil, nil, fmt.Errorf("tracing: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	return tp, tp.Shutdown, nil
}

// Start starts a span named name, a child of the span in ctx, with the
// tracer of that span's provider.
func Start(ctx context.Context, name string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	return trace.SpanFromContext(ctx).TracerProvider().Tracer(instrumentation).Start(ctx, name, trace.WithAttributes(attrs...))
}

// Tracer is the tracer of tp for arca's spans.
func Tracer(tp trace.TracerProvider) trace.Tracer { return tp.Tracer(instrumentation) }

// End ends span, marking it failed when err is not nil.
func End(span trace.Span, err error) {
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}
