package dispatch

import (
	"slices"
	"testing"

	"github.com/snitools/snitools/lib/clienthello"
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
