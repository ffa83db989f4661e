package metrics

import "github.com/prometheus/client_golang/prometheus"

// WatchPeekBudget exports snilisten's peek memory budget (lib/sockpeek's
// Budget): the bytes its peeks hold now, and the limit. A budget that stays
// near its limit means many large hellos stalled at once; connections
// refused for it end with outcome peek_budget.
func (d *Dispatcher) WatchPeekBudget(used, limit func() int64) {
	d.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "snilisten_peek_budget_used_bytes",
			Help: "Bytes of peek buffers counted against the peek memory budget now."},
			func() float64 { return float64(used()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "snilisten_peek_budget_bytes",
			Help: "The peek memory budget (-peek-budget)."},
			func() float64 { return float64(limit()) }))
}
