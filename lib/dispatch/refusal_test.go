package dispatch

import (
	"errors"
	"slices"
	"testing"

	"github.com/snitools/snitools/lib/clienthello"
	"github.com/snitools/snitools/lib/relay"
)

// TestRefusalOutcomes: every outcome the shared refusal mapping
// (lib/clienthello, also used by snipeek) can name is one of snilisten's,
// so that metrics know it up front.
func TestRefusalOutcomes(t *testing.T) {
	for _, o := range []string{clienthello.OutcomeOK, clienthello.OutcomeClientClosed, clienthello.OutcomePeekTimeout,
		clienthello.OutcomePeekBudget, clienthello.OutcomeNotTLS, clienthello.OutcomeBadHello, clienthello.OutcomeNoSNI,
		clienthello.OutcomeInvalidName} {
		if !slices.Contains(Outcomes(), Outcome(o)) {
			t.Errorf("clienthello outcome %q is not in dispatch.Outcomes()", o)
		}
	}
}

func TestAnswered(t *testing.T) {
	idle := errors.New("idle")
	for _, tt := range []struct {
		outcome  Outcome
		err      error
		up, down int64
		want     Outcome
	}{
		{OutcomeOK, nil, 500, 3000, OutcomeOK},
		{OutcomeOK, nil, 500, 0, OutcomeNoAnswer},
		{OutcomeIdleTimeout, idle, 500, 0, OutcomeIdleTimeout},
		{OutcomeRelayError, idle, 500, 0, OutcomeRelayError},
	} {
		r := &record{backend: "/var/tls/a.test", stats: relay.Stats{Up: tt.up, Down: tt.down}}
		got, err := answered(tt.outcome, tt.err, r)
		if got != tt.want || (got == OutcomeNoAnswer) != (err != nil && err != tt.err) {
			t.Errorf("answered(%s, up %d, down %d) = %s, %v; want %s", tt.outcome, tt.up, tt.down, got, err, tt.want)
		}
	}
}
