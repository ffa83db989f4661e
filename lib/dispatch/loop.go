package dispatch

import (
	"errors"
	"fmt"
)

// OutcomeLoop is a connection from one of this proxy's own connections
// to a backend (Config.Outgoing): a name that led back here. It is
// refused (internal_error), which ends the loop after one round instead
// of letting it take a slot per round until none is left.
const OutcomeLoop Outcome = "loop"

// errLoop is the refusal of a connection that came from ourselves.
var errLoop = errors.New("connection from this proxy's own backend connection (a name that leads back here)")

// checkLoop returns an error wrapping errLoop if the connection's peer
// (the trusted front's socket, if it came through one) is one of our
// own connections to a backend. It is asked once the hello is here: our
// dialer adds a connection to the set before it sends the hello, so a
// connection of ours is known by then.
func (s *Server) checkLoop(r *record) error {
	if s.cfg.Outgoing == nil {
		return nil
	}
	peer := r.client
	if r.front != nil {
		peer = r.front
	}
	if s.cfg.Outgoing.ContainsAddr(peer) {
		return fmt.Errorf("%w: from %s", errLoop, peer)
	}
	return nil
}

// forgetOutgoing removes r's backend connection, closed by now, from the
// set of our own connections.
func (s *Server) forgetOutgoing(r *record) {
	if r.outgoing.IsValid() {
		s.cfg.Outgoing.Remove(r.outgoing)
	}
}
