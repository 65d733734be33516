package tracing

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/trace/noop"
)

func TestSetupOffWithoutEndpoint(t *testing.T) {
	for _, env := range []map[string]string{
		{},
		{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_SDK_DISABLED": "true"},
		{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_TRACES_EXPORTER": "none"},
	} {
		tp, shutdown, err := Setup(context.Background(), func(k string) string { return env[k] }, "v0")
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := tp.(noop.TracerProvider); !ok {
			t.Errorf("env %v: provider %T, want no-op", env, tp)
		}
		if err := shutdown(context.Background()); err != nil {
			t.Error(err)
		}
	}
	_, _, err := Setup(context.Background(), func(k string) string {
		return map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}[k]
	}, "v0")
	if err == nil {
		t.Error("grpc protocol accepted; only http/protobuf is exported")
	}
}

// Start without a span in the context is a no-op, and never panics.
func TestStartWithoutSpan(t *testing.T) {
	ctx, span := Start(context.Background(), "x")
	if span.SpanContext().IsValid() {
		t.Error("span recorded without a provider in the context")
	}
	End(span, nil)
	_ = ctx
}
