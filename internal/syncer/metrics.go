package syncer

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	runs      *prometheus.CounterVec
	tags      *prometheus.CounterVec
	bytes     prometheus.Counter
	deferrals *prometheus.CounterVec
	lastStart *prometheus.GaugeVec
	lastEnd   *prometheus.GaugeVec
	lastOK    *prometheus.GaugeVec
	running   *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	ruleLabels := []string{"registry", "rule"}
	m := &metrics{
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "arca_sync_runs_total", Help: "Active-sync runs finished, by result (Succeeded, Failed, Deferred, Interrupted).",
		}, []string{"result"}),
		tags: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "arca_sync_tags_total", Help: "Tags examined by active sync, by outcome (synced, unchanged, excluded, failed).",
		}, []string{"outcome"}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "arca_sync_fetched_bytes_total", Help: "Manifest and blob bytes active sync fetched from upstreams.",
		}),
		deferrals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "arca_sync_deferrals_total", Help: "Runs deferred to spare an upstream (reason: ratelimit, toomanyrequests).",
		}, []string{"reason"}),
		lastStart: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "arca_sync_last_run_start_timestamp_seconds", Help: "Start of a rule's last active-sync run.",
		}, ruleLabels),
		lastEnd: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "arca_sync_last_run_end_timestamp_seconds", Help: "End of a rule's last active-sync run.",
		}, ruleLabels),
		lastOK: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "arca_sync_last_success_timestamp_seconds", Help: "End of a rule's last successful active-sync run.",
		}, ruleLabels),
		running: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "arca_sync_running", Help: "1 while this replica runs a rule's active sync.",
		}, ruleLabels),
	}
	for _, c := range []prometheus.Collector{m.runs, m.tags, m.bytes, m.deferrals, m.lastStart, m.lastEnd, m.lastOK, m.running} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return nil, err
			}
		}
	}
	return m, nil
}
