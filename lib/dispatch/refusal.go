package dispatch

import (
	"fmt"

	"github.com/snitools/snitools/lib/sockpeek"
)

// DefaultPeekBudget is the memory all peek buffers may take together
// beyond the first PeekFree bytes of each: room for about 270 connections
// stalled one byte short of the largest hello (a 256 KiB buffer each, 240
// KiB of it counted), whatever -max-conns allows.
const DefaultPeekBudget = 64 << 20

// PeekFree is the part of each peek buffer not counted in the budget: a
// whole record of 2^14 bytes, more than any real client's hello
// (post-quantum key shares make them 1.5–2 KiB). Connections are bounded
// in number, so this part is bounded too.
const PeekFree = 16 << 10

// newPeekBudget makes the budget of limit bytes, and shows it to an
// observer that watches budgets (the metrics).
func newPeekBudget(limit int64, o Observer) *sockpeek.Budget {
	if limit == 0 {
		limit = DefaultPeekBudget
	}
	b := sockpeek.NewBudget(limit, PeekFree)
	if w, ok := o.(budgetWatcher); ok {
		w.WatchPeekBudget(b.Used, b.Limit)
	}
	return b
}

// budgetWatcher is an Observer that also exports the peek budget
// (lib/metrics).
type budgetWatcher interface {
	WatchPeekBudget(used, limit func() int64)
}

// answered tells apart a relay that ended without error but whose backend
// never sent a byte: a backend that closed at once (one that does not
// expect the PROXY header it was sent, or that refuses the client
// silently) would otherwise be logged as ok, down=0. A client that gives
// up before a slow backend's first byte looks the same: the outcome says
// that the client got nothing, not whose fault it was.
func answered(outcome Outcome, err error, r *record) (Outcome, error) {
	if outcome != OutcomeOK || r.stats.Down > 0 {
		return outcome, err
	}
	return OutcomeNoAnswer, fmt.Errorf("backend %s sent nothing: %d bytes up, 0 down", r.backend, r.stats.Up)
}
