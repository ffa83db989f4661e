// Package quicflow keeps the UDP flows of a QUIC listener that routes by
// SNI without terminating QUIC (snilisten on UDP port 443): which client
// address waits for its hello, which is routed to which backend, and the
// bounds that keep a flood of forged Initials from exhausting memory or
// CPU. It reads datagrams and tells the caller what to do with them; it
// opens no socket and sends nothing itself.
//
// # States
//
// A flow is keyed by the client's address and port (netip.AddrPort; an
// IPv4-mapped address counts as the IPv4 one). Table.Handle takes each
// datagram and returns a Verdict:
//
//   - no flow: a datagram that does not start a QUIC connection
//     (quic.ParseInitial: garbage, an unknown version, a short header or
//     non-Initial packet, a datagram under 1200 or over 1452 bytes) is
//     dropped without creating any state, as is an Initial that does not
//     decrypt. A decrypted Initial starts a pending flow: Wait, or Route
//     at once if its hello fits in it.
//   - pending: the datagrams are fed to a quic.Assembler and held (copied)
//     until the ClientHello is whole. The server name often arrives only
//     in the LAST Initial datagram (quic-go scatters CRYPTO frames out of
//     order across datagrams), so every datagram is held and the backend
//     gets them all, in the order received. A datagram the Assembler
//     refuses alone (another connection ID, a decryption failure, a 0-RTT
//     packet not coalesced after an Initial, whose data the client sends
//     again in 1-RTT packets when it goes unacknowledged) is dropped and
//     not held; one that ends the flow (a protocol violation,
//     a bound of lib/quic, CONNECTION_CLOSE, a malformed hello) drops the
//     flow. Exact duplicates of a held datagram are not held twice.
//   - routing: Route gave the caller the server name, the ALPN list and
//     the held datagrams; the caller chooses the backend by the same
//     convention as for TCP, sends it those datagrams, and calls
//     Table.Routed, which returns the datagrams that came meanwhile
//     (held as before), or Table.Close if there is no backend.
//   - routed: the flow's datagrams are forwarded (Forward, with the
//     caller's backend handle) whatever they hold; Table.Touch marks the
//     flow used when the backend answers. This path allocates nothing.
//   - closed: Table.Close, Table.Expire or a fatal error remove the flow;
//     a later datagram from the address is a new client.
//
// # Bounds
//
// Every piece of state is bounded (Config; the defaults in brackets):
//
//   - MaxPending [512] flows pending. Each holds a quic.Assembler, whose
//     CRYPTO buffer grows to the highest offset the client sent, at most
//     quic.MaxCryptoBytes (64 KiB): in the worst case MaxPending x 66 KiB
//     (33 MiB) besides the held datagrams. A flow that Route gave its
//     caller frees its Assembler and its slot: finding its backend may
//     take a DNS answer as slow as an attacker's name server makes it,
//     which must not keep other clients' hellos out. It is then bounded
//     by MaxRouted, MaxFlowsPerClient and the byte budget, charged its
//     datagrams' actual size, and ends quic.MaxAge after its first
//     datagram if still routing (Table.Expire).
//   - MaxHeldBytes [4 MiB] of held datagrams, all flows together: a flow
//     holds at most quic.MaxDatagrams (16) of at most 1452 bytes, and is
//     charged at least ReservedDatagrams (4) x 1452 bytes from its start,
//     so that once the budget is spent new flows are refused while those
//     that started, real hellos taking one to three datagrams, finish.
//   - pending flows last at most quic.MaxAge [10 s] from their first
//     datagram (Table.Expire; the Assembler refuses later datagrams too).
//   - MaxRouted [16384] flows routing or routed; a hello completed beyond
//     it is dropped with its flow.
//   - IdleTimeout [5 min]: a routed flow unused for longer ends
//     (Table.Expire). It must be at least the backend's QUIC idle
//     timeout (30 s by default in quic-go), or a quiet but live
//     connection would lose its flow and, a new 4-tuple being needed to
//     start one, its client.
//   - NewFlowsPerSecond [32] and NewFlowBurst [64]: each new flow costs a
//     key derivation (HKDF) and a decryption, about 7 us, so new flows
//     are rate limited per client prefix (lib/clientkey: an IPv4 address
//     or an IPv6 /64) by a token bucket. A flood from many ports of one
//     prefix spends that prefix's tokens only.
//   - MaxFlowsPerClient [256] flows (pending, routing and routed) of
//     one client prefix, as -max-conns-per-client for TCP: the rate
//     alone would let one address hold NewFlowsPerSecond x IdleTimeout
//     routed slots (9600 at the defaults).
//   - AnswerTimeout [30 s]: a routed flow whose backend has not answered
//     (Table.Touch) that long after it was routed ends (Table.Expire),
//     whatever its client sends: a backend that ignores it, or a flow
//     the caller routed nowhere, does not hold its slot for IdleTimeout.
//   - MaxClients [16384] token buckets, the least recently used evicted
//     for a new prefix (which, if more prefixes than that are flooding,
//     starts again with a full bucket); Table.Expire forgets the buckets
//     that refilled.
//
// The checks that cost nothing (header, counts, budget) come before the
// rate limit, and the rate limit before the decryption.
//
// # Nothing is sent before the backend answers
//
// A QUIC server must not send a client more than three times the bytes
// it received from it until the client's address is validated (RFC 9000,
// section 8.1): with a forged source address, the answer would flood the
// victim. This package sends nothing at all: it drops what it does not
// route silently (no Version Negotiation, no CONNECTION_CLOSE, no Retry),
// and everything the client gets comes from the backend, which applies
// the limit itself to the datagrams it received through the caller. So
// the listener amplifies nothing.
//
// # Migration and NAT rebinding
//
// A flow is its client's address and port. When a NAT rebinds the
// client's port or the client migrates (RFC 9000, section 9), its packets
// come from a new 4-tuple: a new flow, whose short header packets are not
// Initials and are dropped, so the connection breaks (the client opens a
// new one). Routing by connection ID, which would follow such a client,
// is future work: it needs the connection IDs the backend issues, most of
// which travel encrypted (NEW_CONNECTION_ID frames).
package quicflow
