// Package quicdispatch is snilisten on UDP: it routes QUIC connections
// (HTTP/3) by the server name in their ClientHello, without terminating
// QUIC, to the backend the name points at, and relays the datagrams both
// ways. It is lib/dispatch's twin for datagrams; the flows themselves,
// their bounds and their states are lib/quicflow's, the decryption of the
// Initial packets lib/quic's.
//
// # One flow, start to end
//
//  1. A read loop per UDP socket takes the datagrams, up to 32 per
//     recvmmsg(2), each with the address it was sent to (IP_PKTINFO, for
//     sockets bound to a wildcard address), and gives them one by one to
//     the quicflow.Table, under one lock.
//  2. When the Table says Route, a goroutine maps the hello to a name as
//     for TCP (clienthello.Route: -default-hostname, invalid names),
//     asks the Dialer for a connected UDP socket to the backend (DNS may
//     take a while: the read loop never waits for it), sends it every
//     datagram held so far, in order, and tells the Table (Routed), which
//     returns the datagrams that came meanwhile.
//  3. From then on the read loop writes the flow's datagrams to that
//     socket, and the flow's own goroutine reads the backend's answers
//     (coalesced by UDP_GRO) and sends them to the client from the
//     address the client sent to (UDP_SEGMENT; see reply.go).
//  4. A flow ends when it has been idle for the Table's IdleTimeout
//     (there is no end of stream to see in QUIC: a CONNECTION_CLOSE is
//     encrypted), when its backend has not answered within the
//     AnswerTimeout (outcome no_answer), when the backend's socket fails (an ICMP port
//     unreachable: nothing listens there), or at shutdown. It then writes
//     one log line and tells the Observer.
//
// A flow whose backend cannot be found or used is logged the same way,
// with the same outcomes as TCP (unknown_name, refused_cidr,
// backend_error, no_sni, invalid_name), and its client is sent nothing:
// QUIC has no unencrypted alert, and silence makes a browser fall back to
// TCP, where it gets the TLS alert. Datagrams that start no flow (garbage,
// unknown versions, floods over the rate) are only counted (Observer.
// Dropped), never logged one by one.
//
// # Why one lock
//
// The Table is not safe for concurrent use. Its work per datagram is a
// map lookup on the forward path (about 50 ns) and a decryption only for
// the first datagrams of a flow, so one mutex shared by the read loops
// and the flows' goroutines (Touch when the backend answers) costs less
// than sharding would explain.
//
// # Shutdown
//
// Shutdown closes the UDP sockets and ends every flow at once (outcome
// shutdown). A flow cannot outlive its read loop: the client's datagrams
// are read from the shared socket, which a restarted snilisten inherits
// from systemd. The QUIC connection then fails on its next packet and
// the client opens a new one, which the new process routes.
package quicdispatch
