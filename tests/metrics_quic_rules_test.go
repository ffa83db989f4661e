package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestPrometheusRulesQUIC unit-tests the QUIC alerts of
// dist/prometheus/snitools-rules.yml with promtool (TestPrometheusRules
// checks the file and the TCP alerts): each fires on the instance it is
// about, after its "for", and stays quiet on a healthy one, on drops
// for the per-client rate, and on an instance without QUIC.
func TestPrometheusRulesQUIC(t *testing.T) {
	need(t, "promtool")
	rules, err := filepath.Abs("../dist/prometheus/snitools-rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	test := filepath.Join(t.TempDir(), "quic_rules_test.yml")
	if err := os.WriteFile(test, []byte(strings.Replace(quicRulesTest, "RULES", strconv.Quote(rules), 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("promtool", "test", "rules", test).CombinedOutput(); err != nil {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
}

// quicRulesTest drives the QUIC alerts over an hour, a sample a minute:
// "good" routes 5 flows a second with a few backend errors and silent
// backends (1%) and many drops for the per-client rate, and a few for
// full limits; from minute 11, "broken" has one flow a second that its
// backend never answers (17%) and "flooded" drops 3 datagrams a second
// at its limits; "tcponly" has no QUIC socket.
const quicRulesTest = `rule_files: [RULES]
evaluation_interval: 1m
tests:
- interval: 1m
  input_series:
  - series: 'snilisten_quic_flows_finished_total{job="snilisten", instance="good", outcome="ok"}'
    values: '0+300x60'
  - series: 'snilisten_quic_flows_finished_total{job="snilisten", instance="good", outcome="backend_error"}'
    values: '0+1x60'
  - series: 'snilisten_quic_flows_finished_total{job="snilisten", instance="good", outcome="no_answer"}'
    values: '0+2x60'
  - series: 'snilisten_quic_datagrams_dropped_total{job="snilisten", instance="good", reason="rate"}'
    values: '0+600x60'
  - series: 'snilisten_quic_datagrams_dropped_total{job="snilisten", instance="good", reason="pending_full"}'
    values: '0+10x60'
  - series: 'snilisten_quic_flows_finished_total{job="snilisten", instance="broken", outcome="ok"}'
    values: '0+300x60'
  - series: 'snilisten_quic_flows_finished_total{job="snilisten", instance="broken", outcome="no_answer"}'
    values: '0x10 0+60x50'
  - series: 'snilisten_quic_flows_finished_total{job="snilisten", instance="flooded", outcome="ok"}'
    values: '0+300x60'
  - series: 'snilisten_quic_datagrams_dropped_total{job="snilisten", instance="flooded", reason="pending_full"}'
    values: '0x10 0+120x50'
  - series: 'snilisten_quic_datagrams_dropped_total{job="snilisten", instance="flooded", reason="budget"}'
    values: '0x10 0+60x50'
  - series: 'snilisten_quic_datagrams_dropped_total{job="snilisten", instance="flooded", reason="routed_full"}'
    values: '0x60'
  - series: 'snilisten_connections_finished_total{job="snilisten", instance="tcponly", outcome="backend_error"}'
    values: '0+600x60'
  alert_rule_test:
  - {eval_time: 10m, alertname: SnilistenQUICBackendErrors, exp_alerts: []}
  - {eval_time: 10m, alertname: SnilistenQUICLimits, exp_alerts: []}
  # Pending, not firing yet: 10 minutes "for".
  - {eval_time: 18m, alertname: SnilistenQUICBackendErrors, exp_alerts: []}
  - {eval_time: 18m, alertname: SnilistenQUICLimits, exp_alerts: []}
  - eval_time: 35m
    alertname: SnilistenQUICBackendErrors
    exp_alerts:
    - exp_labels: {severity: warning, instance: broken, job: snilisten}
      exp_annotations:
        summary: "snilisten broken: QUIC backends fail or do not answer"
        description: "16.67% of QUIC flows end in backend_error or no_answer; see the log lines msg=\"quic flow\" with those outcomes for which backend (HTTP/3 not served on UDP, UDP filtered, nat46 prefix not routed locally?)."
  - eval_time: 35m
    alertname: SnilistenQUICLimits
    exp_alerts:
    - exp_labels: {severity: warning, instance: flooded, job: snilisten}
      exp_annotations:
        summary: "snilisten flooded: QUIC flows dropped at their limits"
        description: "3 datagrams a second dropped because -quic-max-pending, -quic-pending-budget or -quic-max-flows is reached; see snilisten_quic_datagrams_dropped_total by reason."
`
