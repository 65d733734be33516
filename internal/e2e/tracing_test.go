package e2e

import (
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/arcacache/arca/internal/testutil/upstreamreg"
)

// otlpSink is an OTLP/HTTP trace receiver: it keeps each span's name,
// trace ID and the service name it came from.
type otlpSink struct {
	mu    sync.Mutex
	spans []sinkSpan
}

type sinkSpan struct {
	name, traceID, service string
}

func (s *otlpSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body = zr
	}
	b, err := io.ReadAll(body)
	var req coltrace.ExportTraceServiceRequest
	if err == nil {
		err = proto.Unmarshal(b, &req)
	}
	if r.URL.Path != "/v1/traces" || err != nil {
		http.Error(w, "bad export", http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	for _, rs := range req.GetResourceSpans() {
		service := ""
		for _, a := range rs.GetResource().GetAttributes() {
			if a.GetKey() == "service.name" {
				service = a.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, sp := range ss.GetSpans() {
				s.spans = append(s.spans, sinkSpan{name: sp.GetName(), traceID: string(hexID(sp.GetTraceId())), service: service})
			}
		}
	}
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/x-protobuf")
	out, _ := proto.Marshal(&coltrace.ExportTraceServiceResponse{})
	_, _ = w.Write(out)
}

func hexID(b []byte) []byte {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return out
}

// byTrace returns the span names of each trace.
func (s *otlpSink) byTrace() map[string]map[string]bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]map[string]bool{}
	for _, sp := range s.spans {
		if out[sp.traceID] == nil {
			out[sp.traceID] = map[string]bool{}
		}
		out[sp.traceID][sp.name] = true
		out[sp.traceID]["service="+sp.service] = true
	}
	return out
}

// TestTracingOTLP: with OTEL_EXPORTER_OTLP_ENDPOINT set, a cold pull
// through the real binary exports spans over OTLP/HTTP: the request, rule
// resolution, the local lookup, the upstream request, the store; a
// client's traceparent is continued, and the detached blob fetch stays in
// its request's trace.
func TestTracingOTLP(t *testing.T) {
	sink := &otlpSink{}
	collector := httptest.NewServer(sink)
	defer collector.Close()
	up := upstreamreg.Start(t, upstreamreg.Options{})
	im := newImage(t, 7000, "amd64", 50<<10)
	seedImage(t, up, "library/app", "v1", im)
	a := startCachingArca(t, []string{up.Host}, []string{
		"OTEL_EXPORTER_OTLP_ENDPOINT=" + collector.URL, "OTEL_BSP_SCHEDULE_DELAY=100",
	})
	a.cacheRule(t, "lib-wild", up.Host+"/library/*", "lib/*")

	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	r := do(t, "GET", a.URL()+"/v2/lib/app/manifests/v1", map[string]string{
		"Accept": mtAcceptAll, "traceparent": "00-" + traceID + "-00f067aa0ba902b7-01"}, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("manifest: %s", r)
	}
	layer := sha(im.Layers[0])
	getCached(t, a.URL()+"/v2/lib/app/blobs/"+layer, layer)

	manifestSpans := []string{"GET manifest", "rule resolve", "cache lookup manifest", "upstream GET", "store manifest", "service=arca"}
	blobSpans := []string{"GET blob", "cache lookup blob", "fetch blob", "upstream GET", "store blob"}
	deadline := time.Now().Add(30 * time.Second)
	for {
		traces := sink.byTrace()
		missing := func(names map[string]bool, want []string) []string {
			var m []string
			for _, w := range want {
				if !names[w] {
					m = append(m, w)
				}
			}
			return m
		}
		mMissing := missing(traces[traceID], manifestSpans)
		bMissing := blobSpans
		for id, names := range traces {
			if id != traceID && names["GET blob"] {
				bMissing = missing(names, blobSpans)
			}
		}
		if len(mMissing) == 0 && len(bMissing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("spans missing after 30s: manifest trace %v, blob trace %v; got %v", mMissing, bMissing, traces)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
