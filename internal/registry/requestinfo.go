package registry

import "context"

// RequestInfo is what the registry found out about a request, for the
// access log: the repository named, and for a rule-backed one the rule and
// the upstream repository it maps to. The access log middleware attaches
// it with WithRequestInfo; the registry fills it in.
type RequestInfo struct {
	Repo     string
	Rule     string
	Upstream string
}

type requestInfoKey struct{}

// WithRequestInfo returns ctx carrying a RequestInfo to fill in.
func WithRequestInfo(ctx context.Context) (context.Context, *RequestInfo) {
	ri := &RequestInfo{}
	return context.WithValue(ctx, requestInfoKey{}, ri), ri
}

// requestInfo returns the RequestInfo of ctx, or a throwaway one.
func requestInfo(ctx context.Context) *RequestInfo {
	if ri, ok := ctx.Value(requestInfoKey{}).(*RequestInfo); ok {
		return ri
	}
	return &RequestInfo{}
}
