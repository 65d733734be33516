package mgmt

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/arcacache/arca/internal/gc"
	"github.com/arcacache/arca/internal/metadata"
)

// GarbageCollector runs garbage collection on demand.
type GarbageCollector interface {
	Run(ctx context.Context, req gc.Request) (gc.Result, error)
}

// RetentionStore keeps registries' retention policies for untagged
// manifests.
type RetentionStore interface {
	GetRetentionPolicy(ctx context.Context, registry string) (metadata.RetentionPolicy, error)
	PutRetentionPolicy(ctx context.Context, p metadata.RetentionPolicy) error
}

// retentionBody is properties.policies.retentionPolicy of a registry
// PATCH or PUT (az acr config retention update).
type retentionBody struct {
	Days   opt[int]    `json:"days"`
	Status opt[string] `json:"status"`
}

// maxRetentionDays is ACR's limit.
const maxRetentionDays = 365

// applyRetention validates and stores a retention policy change.
func (h *Handler) applyRetention(ctx context.Context, registry string, b retentionBody) error {
	if h.opts.Retention == nil {
		return &apiError{Status: http.StatusNotImplemented, Code: "NotImplemented", Message: "Retention policies are not available on this arca server."}
	}
	p, err := h.opts.Retention.GetRetentionPolicy(ctx, registry)
	if err != nil {
		return err
	}
	if b.Days.value() {
		if b.Days.V < 0 || b.Days.V > maxRetentionDays {
			return errBadRequest("InvalidRetentionDays", "The retention policy's days must be between 0 and 365.")
		}
		p.Days = b.Days.V
	}
	if b.Status.value() {
		switch strings.ToLower(b.Status.V) {
		case "enabled":
			p.Enabled = true
		case "disabled":
			p.Enabled = false
		default:
			return errBadRequest("InvalidRetentionStatus", "The retention policy's status must be enabled or disabled.")
		}
	}
	return h.opts.Retention.PutRetentionPolicy(ctx, p)
}

// retentionJSON is a registry's properties.policies.retentionPolicy.
func (h *Handler) retentionJSON(ctx context.Context, registry string) (map[string]any, error) {
	p := metadata.RetentionPolicy{Days: metadata.DefaultRetentionDays}
	if h.opts.Retention != nil {
		var err error
		if p, err = h.opts.Retention.GetRetentionPolicy(ctx, registry); err != nil {
			return nil, err
		}
	}
	v := map[string]any{"days": p.Days, "status": "disabled"}
	if p.Enabled {
		v["status"] = "enabled"
	}
	if !p.UpdatedAt.IsZero() {
		v["lastUpdatedTime"] = timeJSON(p.UpdatedAt)
	}
	return v, nil
}

// Timing of garbage collection operations.
const (
	// opHeartbeat is how often a running operation's record is written:
	// its progress, and the sign that its replica is alive.
	opHeartbeat = time.Second
	// opStale: an InProgress operation not written for this long lost its
	// replica (killed mid-run); polls answer that it failed.
	opStale = time.Minute
)

// garbageCollect is POST .../registries/R/garbageCollect (arca's own
// action), {"dryRun": true} to only count, {"reclaim": true} to wait out
// the grace period after marking and delete in the same run. It is an ARM long-running
// operation: once the run holds the collector's lease it answers 202 with
// Azure-AsyncOperation (the status document, with the run's progress as
// its properties), Location (the result once it succeeded) and the status
// document as the body; 409 GarbageCollectionInProgress while another run
// holds the lease. The run goes on after the request; its record in the
// metadata store lets any replica answer the polls.
//
// The run is limited to what R owns (its untagged manifests and upload
// sessions). The store-wide phases (blob rows, orphaned bytes, stray
// staged parts) are shared by every registry: they run only for a caller
// with authority over every registry, and are reported apart ("store").
func (h *Handler) garbageCollect(w http.ResponseWriter, req *request) error {
	if req.r.Method == http.MethodGet {
		return h.latestGC(w, req)
	}
	if req.r.Method != http.MethodPost {
		return errMethod(req.r)
	}
	if h.opts.GC == nil {
		return &apiError{Status: http.StatusNotImplemented, Code: "NotImplemented", Message: "Garbage collection is not available on this arca server."}
	}
	var body struct {
		DryRun  bool `json:"dryRun"`
		Reclaim bool `json:"reclaim"`
	}
	if req.r.ContentLength != 0 {
		if err := readBody(req.r, &body); err != nil {
			return err
		}
	}
	greq := gc.Request{Registry: req.registry, DryRun: body.DryRun, Reclaim: body.Reclaim,
		StoreWide: req.caller.Registry == "" && req.caller.allows(levelWrite, "")}
	switch {
	case body.Reclaim && body.DryRun:
		return errBadRequest("InvalidRequestContent", "reclaim and dryRun exclude each other: a dry run marks nothing to reclaim.")
	case body.Reclaim && !greq.StoreWide:
		return &apiError{Status: http.StatusForbidden, Code: "AuthorizationFailed",
			Message: "reclaim deletes shared blobs: it needs a role over every registry, not one registry's."}
	}
	run := h.startGC(greq)
	select {
	case <-run.started:
	case <-run.done:
		select {
		case <-run.started: // it started and ended at once
		default:
			if errors.Is(run.err, gc.ErrBusy) {
				return &apiError{Status: http.StatusConflict, Code: "GarbageCollectionInProgress", Message: "Garbage collection is already running (on this or another replica): try again when it ends."}
			}
			return run.err
		}
	case <-req.r.Context().Done():
		run.cancel()
		<-run.done
		return req.r.Context().Err()
	}
	op := h.newOperation(gcKind, req.registry, h.registryID(req.registry))
	op.Status, op.EndedAt, op.UpdatedAt, op.Properties = opInProgress, time.Time{}, op.StartedAt, run.progress()
	if err := h.opts.Store.PutOperation(req.r.Context(), op); err != nil {
		run.cancel()
		<-run.done
		return err
	}
	h.ops.wg.Add(1)
	go h.reportGC(run, op)
	h.log.Info("garbage collection on demand started", "registry", req.registry, "dry_run", body.DryRun,
		"store_wide", greq.StoreWide, "operation", op.ID)
	w.Header().Set("Azure-AsyncOperation", h.asyncOperationURL(req, op))
	w.Header().Set("Location", h.operationResultURL(req, op))
	w.Header().Set("Retry-After", "1")
	writeJSON(w, http.StatusAccepted, h.operationDoc(op))
	return nil
}

// gcKind is the operation kind of garbage collection runs (the prefix of
// their IDs).
const gcKind = "garbagecollect"

// latestGC serves GET .../registries/R/garbageCollect (`arca gc show`
// without an ID): the status document of R's last run, as its
// operationStatuses URL answers it; 404 when none is recorded (operation
// records are kept metadata.OperationRetention).
func (h *Handler) latestGC(w http.ResponseWriter, req *request) error {
	op, err := h.opts.Store.LatestOperation(req.r.Context(), req.registry, gcKind)
	if errors.Is(err, metadata.ErrNotFound) {
		return errNotFound("ResourceNotFound", "No garbage collection run of registry '"+req.registry+"' is recorded (runs are kept for "+
			strconv.Itoa(int(metadata.OperationRetention.Hours()))+" hours).")
	}
	if err != nil {
		return err
	}
	h.writeOperationStatus(w, req, op)
	return nil
}

// gcRun is a garbage collection run going on in the background.
type gcRun struct {
	cancel  context.CancelFunc
	started chan struct{} // closed once the run holds the lease
	done    chan struct{} // closed when it ended; then res and err are set
	res     gc.Result
	err     error

	mu     sync.Mutex
	latest gc.Result
}

// startGC starts req under the handler's operations context (it outlives
// the request; StopOperations ends it).
func (h *Handler) startGC(req gc.Request) *gcRun {
	ctx, cancel := context.WithCancel(h.ops.ctx)
	run := &gcRun{cancel: cancel, started: make(chan struct{}), done: make(chan struct{})}
	var once sync.Once
	req.Progress = func(r gc.Result) {
		run.mu.Lock()
		run.latest = r
		run.mu.Unlock()
		once.Do(func() { close(run.started) })
	}
	h.ops.wg.Add(1)
	go func() {
		defer h.ops.wg.Done()
		defer cancel()
		run.res, run.err = h.opts.GC.Run(ctx, req)
		close(run.done)
	}()
	return run
}

// progress is the latest progress as the operation's properties.
func (run *gcRun) progress() string {
	run.mu.Lock()
	defer run.mu.Unlock()
	return jsonString(run.latest)
}

func jsonString(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return ""
	}
	return string(b)
}

// reportGC writes the run's operation record: its progress every
// opHeartbeat, then how it ended. It is the only writer once the request
// recorded the start, so the records never go back in time.
func (h *Handler) reportGC(run *gcRun, op metadata.Operation) {
	defer h.ops.wg.Done()
	put := func() {
		// Not under the operations context: the end of a run that shutdown
		// cancelled is recorded too.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := h.opts.Store.PutOperation(ctx, op); err != nil {
			h.log.Warn("garbage collection: recording the operation failed", "operation", op.ID, "err", err)
		}
	}
	t := time.NewTicker(opHeartbeat)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			op.UpdatedAt, op.Properties = h.opts.Now().UTC(), run.progress()
			put()
		case <-run.done:
			op.EndedAt = h.opts.Now().UTC()
			op.UpdatedAt, op.Properties = op.EndedAt, jsonString(run.res)
			switch {
			case run.err == nil:
				op.Status = opSucceeded
				h.log.Info("garbage collection on demand ended", "operation", op.ID, "phase", run.res.Phase)
			case errors.Is(run.err, context.Canceled):
				op.Status, op.ErrorCode = opCanceled, "OperationCanceled"
				op.ErrorMsg = "The server shut down while garbage collection ran; what it reclaimed until then stays reclaimed."
			default:
				op.Status, op.ErrorCode = opFailed, "InternalServerError"
				op.ErrorMsg = "Garbage collection failed in phase " + run.res.Phase + " (details in the server log, operation " + op.ID + "); what it reclaimed until then stays reclaimed."
				h.log.Error("garbage collection on demand failed", "operation", op.ID, "err", run.err)
			}
			put()
			return
		}
	}
}
