// Package quic reads the server name of a QUIC connection from the
// client's Initial packets, without terminating QUIC: so that snilisten
// can route UDP port 443 by SNI to a backend that holds the keys, as it
// routes TCP, while the datagrams themselves go to the backend untouched.
//
// The TLS ClientHello of a QUIC connection travels in the client's Initial
// packets, encrypted with keys that anyone can derive from the client's
// first Destination Connection ID (RFC 9001, section 5.2): the encryption
// hides nothing from an on-path reader, it only keeps middleboxes from
// ossifying the format. This package derives those keys (crypto/hkdf),
// removes header protection, decrypts (AES-128-GCM), walks the packets
// coalesced in a datagram, reassembles the CRYPTO stream by offset across
// datagrams (out of order, duplicated, split into many frames) and hands
// the ClientHello to lib/clienthello. QUIC version 1 (RFC 9000, RFC 9001)
// and version 2 (RFC 9369) are understood; any other version is reported
// as ErrUnknownVersion, so that a caller can drop it silently.
//
// What is checked, as a QUIC server would before it trusts the hello
// (RFC 9000): the datagram carrying a client Initial is at least 1200 bytes
// (section 14.1) and at most 1452 (what quic-go servers read); the first Destination Connection ID is 8 to 20 bytes
// (section 7.2); the fixed bit is set unless the Initial carries a token
// (RFC 9287); every packet of the flow has the same version and
// Destination Connection ID; each Initial packet decrypts and
// authenticates; its packet number was not received before (a duplicate
// is dropped, as a server drops it); its reserved header bits are zero (section 17.2); it
// holds at least one frame, and only frames allowed in an Initial packet
// (section 12.4): PADDING, PING, ACK, CRYPTO and CONNECTION_CLOSE of type
// 0x1c; frames are well formed; and CRYPTO data sent twice for the same
// offsets is the same both times (so that this package and the backend
// cannot be shown two different hellos).
//
// The state of one flow is bounded: an Assembler takes at most
// MaxDatagrams datagrams and MaxPackets Initial packets, CRYPTO data only
// at offsets below MaxCryptoBytes (which also bounds the hello), at most
// MaxFragments disjoint pieces of the stream at once, and a flow lasts at
// most MaxAge from its first datagram. An Assembler holds two buffers, the
// CRYPTO stream received so far (at most MaxCryptoBytes) and one
// decrypted packet (at most MaxDatagramSize), each grown to what the
// flow needs and kept by Reset, and allocates nothing else once its keys
// are derived.
//
// A proxy that routes by what it reads must read what the backend will
// read: a packet this package accepted and the backend dropped could show
// it one hello and the backend another. So it drops what a server drops
// (duplicate packet numbers, a cleared fixed bit, small datagrams, short
// connection IDs), reads no datagram larger than a server may read, and
// refuses CRYPTO data that contradicts earlier data.
//
// What is NOT done: no 1-RTT, 0-RTT or Handshake packet is decrypted (they
// are skipped when coalesced after an Initial); no Retry or Version
// Negotiation is handled (they come from servers; after a Retry the
// client's Initials carry the connection ID the server chose, which an
// Assembler refuses as another connection: the caller has routed the
// flow by then and need not read them); no
// connection is routed by connection ID, only by what the caller keys its
// flows by (the client's address); nothing is ever sent.
package quic
