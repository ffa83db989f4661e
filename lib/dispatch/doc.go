// Package dispatch is the heart of snilisten: it accepts connections, peeks
// at each ClientHello without consuming it, finds the backend for the
// server name, and relays the untouched stream, ending with one log line
// per connection.
//
// Data flows one way: listener -> peek (clienthello) -> name (hostname) ->
// backend (dial) -> relay -> log line. Every failure is explicit: a client
// that spoke TLS gets an alert saying why it cannot be served, anything
// else is closed, and the log line says what happened.
//
// A connection takes one of two paths. The general path gives it a
// goroutine and a net.Conn, and may wait: for the rest of a hello, for a
// PROXY header from a trusted front, for DNS, for a client to read its
// alert. In unix mode most connections never need any of that: the hello
// arrived with the connection (TCP_DEFER_ACCEPT), the name has a socket.
// For them the accept loop itself does everything with raw, non-blocking
// system calls (lib/rawsys) and hands the two descriptors to the relay:
// no goroutine, no registration with the runtime's poller, no wake-up of
// another thread (dispatchNow). In tcp and nat46 modes the same
// connections get a goroutine only for DNS and the connect, with the
// backend socket made raw as well (dialAndRelay). Anything unusual goes to
// the general path unchanged, so every behaviour is defined there once.
//
// # Files
//
//   - server.go: Config, Server, New; the accept loops (Serve for any
//     net.Listener, serveFDs for a TCP listener); Shutdown. Listeners,
//     connections and slots are tracked by a listener.Group, as in
//     redirect80.
//   - admission.go: eviction of peeking connections and the per-client
//     bound, asked by both accept loops (admitConn).
//   - outcome.go: Outcome, Report, Observer; the per-connection record;
//     finish, which every connection ends in, and the log line.
//   - general.go: the net.Conn path (run, dispatch, peekName, dial,
//     refuse, sendProxyHeader).
//   - fast.go: the descriptor path (dispatchNow, dialFD, refuseNow,
//     appendProxyHeaderFD).
//   - loop.go, refusal.go: refusing our own connections (OutcomeLoop); the
//     peek budget and OutcomeNoAnswer.
//
// # The twin paths
//
// The fast path exists only for speed: under connection load a goroutine,
// its wake-ups and a poller registration per connection cost more CPU than
// relaying the bytes. It handles only what needs no waiting and no
// explaining, and hands everything else, untouched (nothing read from the
// socket), to the general path. Each step of the fast path mirrors one of
// the general path, with the same result for the same input:
//
//	general (net.Conn, may wait)    fast (descriptor, never waits)
//	Serve                           serveFDs
//	run, dispatch                   dispatchNow (in the accept loop), dialAndRelay (goroutine)
//	peekName (clienthello.Route)    dispatchNow: clienthello.PeekNow and hostname.Canonical
//	dial (Dialer.Dial)              dispatchNow: FDDialer.DialNow; dialFD (ConnFDDialer.DialFD)
//	handOff (handoff.SendMessage)   dispatchNow: handoff.SendFD
//	sendProxyHeader                 appendProxyHeaderFD (both build it with proxyHeader)
//	relay.Engine.Start              relayFDs: relay.Engine.StartFDs
//	refuse (clienthello.Refuse)     refuseNow
//
// Both paths decide how a failed backend ends, and which alert its client
// gets, in one place (dialFailure: dispatch and dialAndRelay ask it); the fast
// path's other failures, once it has taken the connection, end in failNow
// (internal_error). Both end
// every connection in finish, and report (the log line and the Observer)
// is the one place an outcome is told, for finish and for admitConn's
// per-client refusal of a connection not yet tracked.
//
// # The per-connection record
//
// A record is made by the accept loop (start, client; local on the
// general path), then filled as the connection goes: the client and local
// address from a trusted front's header (readFrontHeader), peek and sni
// (peekName, dispatchNow), connect and outgoing (dial, dialFD), backend and
// backendName once a backend is chosen (record.chose, on both paths), stats when the relay ends (relayDone), and outcome and err in
// finish. Only the closer is shared with Shutdown, under the lock of the
// listener.Group that tracks listeners, connections and slots (setCloser).
package dispatch
