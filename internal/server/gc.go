package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/arcacache/arca/internal/gc"
)

// GCOptions configure garbage collection (see internal/gc).
type GCOptions struct {
	// Interval between scheduled runs (0: none; runs on demand only).
	Interval time.Duration
	// Grace is how long a blob stays unreferenced before it is deleted
	// (default 1h).
	Grace time.Duration
}

// newCollector builds the garbage collector, its metrics registered on reg.
func (s *Server) newCollector(reg prometheus.Registerer) (*gc.Collector, error) {
	if s.opts.GC.Interval < 0 {
		return nil, fmt.Errorf("--gc-interval must not be negative, got %s", s.opts.GC.Interval)
	}
	host, _ := os.Hostname()
	s.gcMetrics = newGCMetrics(reg)
	return gc.New(s.meta, s.blobs, gc.Options{
		Grace:        s.opts.GC.Grace,
		UploadMaxAge: s.opts.UploadMaxAge,
		Holder:       fmt.Sprintf("%s/%d/%s", host, os.Getpid(), uuid.NewString()[:8]),
		Logger:       s.log,
		Observe:      s.gcMetrics.observe,
	})
}

// gcLoop runs garbage collection every Interval (the first run one
// interval after start). A run another replica holds is skipped.
func (s *Server) gcLoop(ctx context.Context) {
	if s.opts.GC.Interval <= 0 {
		return
	}
	t := time.NewTicker(s.opts.GC.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := s.gc.Run(ctx, gc.Request{}); err != nil && !errors.Is(err, gc.ErrBusy) && ctx.Err() == nil {
			s.log.Warn("garbage collection failed", "err", err)
		}
	}
}

// janitor purges abandoned uploads, bytes and rows, at least every
// UploadMaxAge/2 (and at most hourly), through the collector's upload
// phase (full runs purge them too).
func (s *Server) janitor(ctx context.Context) {
	t := time.NewTicker(min(time.Hour, max(s.opts.UploadMaxAge/2, time.Second)))
	defer t.Stop()
	for {
		parts, sessions, err := s.gc.PurgeUploads(ctx)
		if err != nil && ctx.Err() == nil {
			s.log.Warn("purge uploads", "err", err)
		}
		s.gcMetrics.deleted.WithLabelValues("upload").Add(float64(sessions))
		s.gcMetrics.deleted.WithLabelValues("upload_part").Add(float64(parts))
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
