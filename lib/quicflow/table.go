package quicflow

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/snitools/snitools/lib/clienthello"
	"github.com/snitools/snitools/lib/clientkey"
	"github.com/snitools/snitools/lib/quic"
)

// Defaults of Config (see the package documentation for why).
const (
	DefaultMaxPending        = 512
	DefaultMaxHeldBytes      = 4 << 20
	DefaultMaxRouted         = 16384
	DefaultIdleTimeout       = 5 * time.Minute
	DefaultNewFlowsPerSecond = 32
	DefaultNewFlowBurst      = 64
	DefaultMaxClients        = 16384
	DefaultMaxFlowsPerClient = 256
	DefaultAnswerTimeout     = 30 * time.Second

	// ReservedDatagrams is how many datagrams of the largest size
	// (quic.MaxDatagramSize) the byte budget sets aside for each pending
	// flow when it starts: a real client's hello takes one to three, so
	// a flow that started finishes even when the budget is spent.
	ReservedDatagrams = 4
	reserve           = ReservedDatagrams * quic.MaxDatagramSize
)

// Errors a dropped datagram is reported with (Result.Err), besides those
// of lib/quic. Test with errors.Is. The refusals of the bounds are these
// values themselves, with no detail added: under a flood they are what
// most datagrams get, and formatting one per datagram would cost more
// than the check (about 0.9 us and 5 allocations a datagram).
var (
	// ErrRate: the client's prefix (lib/clientkey) started new flows
	// faster than Config.NewFlowsPerSecond allows.
	ErrRate = errors.New("quicflow: new flows from this client prefix over the rate")
	// ErrPendingFull: Config.MaxPending flows are already waiting for
	// their hello.
	ErrPendingFull = errors.New("quicflow: too many flows waiting for their hello")
	// ErrBudget: holding the datagram would exceed Config.MaxHeldBytes.
	ErrBudget = errors.New("quicflow: held datagrams over the byte budget")
	// ErrRoutedFull: Config.MaxRouted flows are already routed.
	ErrRoutedFull = errors.New("quicflow: too many routed flows")
	// ErrClientFlows: the client's prefix already has
	// Config.MaxFlowsPerClient flows.
	ErrClientFlows = errors.New("quicflow: too many flows from this client prefix")
	// ErrDuplicate: the datagram is byte for byte one already held.
	ErrDuplicate = errors.New("quicflow: duplicate datagram")
	// ErrNoFlow: Routed for an address with no flow awaiting a backend
	// (it expired or was closed meanwhile).
	ErrNoFlow = errors.New("quicflow: no flow awaiting a backend")
)

// errNotInitial is a datagram from an unknown client too short for an
// Initial or in a short header packet.
var errNotInitial = fmt.Errorf("%w: short header packet or datagram under %d bytes from a client without a flow", quic.ErrNotInitial, quic.MinDatagramSize)

// Config bounds a Table. A zero field takes its default; a negative
// one means no bound (for NewFlowsPerSecond: no rate limit).
type Config struct {
	// MaxPending bounds the flows whose hello is not yet whole.
	MaxPending int
	// MaxHeldBytes bounds the bytes of datagrams held for all pending
	// flows together, each charged at least ReservedDatagrams of
	// quic.MaxDatagramSize bytes.
	MaxHeldBytes int
	// MaxRouted bounds the flows routed to a backend.
	MaxRouted int
	// IdleTimeout ends a routed flow that neither side used for that
	// long. It must be at least the backend's QUIC idle timeout.
	IdleTimeout time.Duration
	// NewFlowsPerSecond and NewFlowBurst are the token bucket of each
	// client prefix (lib/clientkey) for starting flows.
	NewFlowsPerSecond float64
	NewFlowBurst      int
	// MaxClients bounds the token buckets kept.
	MaxClients int
	// MaxFlowsPerClient bounds the flows (pending, routing and routed)
	// of one client prefix (lib/clientkey), as -max-conns-per-client
	// does for TCP: without it, one address starting flows at the
	// permitted rate would hold NewFlowsPerSecond x IdleTimeout of the
	// MaxRouted slots (9600 at the defaults).
	MaxFlowsPerClient int
	// AnswerTimeout ends a routed flow whose backend has not sent its
	// client anything (Touch) that long after it was routed: a backend
	// that ignores the flow, or a flow routed nowhere (refused by the
	// caller), frees its slot sooner than IdleTimeout. It is at most
	// IdleTimeout.
	AnswerTimeout time.Duration
}

func (c Config) withDefaults() Config {
	def := func(v *int, d int) {
		switch {
		case *v == 0:
			*v = d
		case *v < 0:
			*v = int(^uint(0) >> 1)
		}
	}
	def(&c.MaxPending, DefaultMaxPending)
	def(&c.MaxHeldBytes, DefaultMaxHeldBytes)
	def(&c.MaxRouted, DefaultMaxRouted)
	def(&c.NewFlowBurst, DefaultNewFlowBurst)
	def(&c.MaxClients, DefaultMaxClients)
	def(&c.MaxFlowsPerClient, DefaultMaxFlowsPerClient)
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.AnswerTimeout <= 0 {
		c.AnswerTimeout = DefaultAnswerTimeout
	}
	c.AnswerTimeout = min(c.AnswerTimeout, c.IdleTimeout)
	if c.NewFlowsPerSecond == 0 {
		c.NewFlowsPerSecond = DefaultNewFlowsPerSecond
	}
	return c
}

// Verdict tells the caller what to do with a datagram.
type Verdict int

const (
	// Drop: drop the datagram silently; Result.Err says why.
	Drop Verdict = iota
	// Wait: the datagram is held, the hello is not whole yet; send
	// nothing.
	Wait
	// Route: the hello is whole. Choose a backend by Result.ServerName
	// and Result.ALPN, send it Result.Datagrams in that order, then
	// call Routed (or Close if there is no backend).
	Route
	// Forward: the flow is routed; send the datagram to Result.Backend.
	Forward
)

var verdictNames = [...]string{"drop", "wait", "route", "forward"}

func (v Verdict) String() string {
	if v >= 0 && int(v) < len(verdictNames) {
		return verdictNames[v]
	}
	return fmt.Sprintf("Verdict(%d)", int(v))
}

// Result is what Handle decided about a datagram.
type Result struct {
	Verdict Verdict
	// Err says why a datagram was dropped (Drop): an error of this
	// package or of lib/quic. Nil otherwise.
	Err error
	// ServerName and ALPN are what the hello says (Route).
	ServerName string
	ALPN       []string
	// Datagrams are the flow's datagrams, copies in the order
	// received, the last one included (Route). The Table does not
	// reuse them.
	Datagrams [][]byte
	// Hello is the whole ClientHello (Route), for callers that map it
	// to a name as for TCP (clienthello.Route: default host, invalid
	// names).
	Hello clienthello.Info
	// First is when the flow's first datagram came (Route): with the
	// time of the last one, how long the hello took to arrive whole.
	First time.Time
	// Backend is what the caller gave Routed (Forward).
	Backend any
}

// Stats is what a Table holds.
type Stats struct {
	Pending   int // flows waiting for their hello
	Routing   int // flows whose hello is whole, waiting for their backend (Routed or Close)
	Routed    int // flows routing or routed: the slots of MaxRouted taken
	HeldBytes int // bytes charged to the budget (reservations included)
	Clients   int // token buckets kept
}

type state uint8

const (
	pending state = iota // hello not whole
	routing              // hello whole, Route given, backend not yet known
	routed
)

// A flow is the state of one client address. Its pend part exists while
// it is pending or routing.
type flow struct {
	from       netip.AddrPort
	state      state
	first      time.Time  // first datagram, then the time it was routed: pending and unanswered flows expire by it
	last       time.Time  // last use: routed flows expire by it
	prev, next *flow      // in Table.pending, Table.unanswered or Table.routed
	client     netip.Addr // the prefix (clientkey) counted in Table.perClient
	answered   bool       // routed, and Touch called since
	backend    any
	pend       *pend
}

type pend struct {
	asm      quic.Assembler
	held     [][]byte
	bytes    int // of held
	charged  int // max(bytes, reserve)
	routeLen int // datagrams given with Route
}

// A Table keeps the UDP flows of one listening socket, keyed by client
// address and port. It is not safe for concurrent use: one goroutine
// (the socket's reader) owns it, or the caller locks.
type Table struct {
	c       Config
	flows   map[netip.AddrPort]*flow
	pending list // pending and routing flows, oldest first datagram first
	routed  list // routed flows answered by their backend, least recently used first
	// unanswered holds the routed flows whose backend has not answered
	// yet, in the order they were routed.
	unanswered list
	perClient  map[netip.Addr]int // flows by client prefix
	npend      int                // flows pending: the slots of MaxPending taken
	nrouting   int                // flows routing
	nrouted    int                // routing and routed: slots of MaxRouted taken
	charged    int
	limit      *limiter
}

// list is a doubly linked list of flows around a sentinel.
type list struct{ root flow }

func (l *list) init() { l.root.prev, l.root.next = &l.root, &l.root }

func (l *list) pushBack(f *flow) {
	f.prev, f.next = l.root.prev, &l.root
	f.prev.next, l.root.prev = f, f
}

func (l *list) front() *flow {
	if l.root.next == &l.root {
		return nil
	}
	return l.root.next
}

func unlink(f *flow) {
	f.prev.next, f.next.prev = f.next, f.prev
	f.prev, f.next = nil, nil
}

// New returns an empty Table bounded by c.
func New(c Config) *Table {
	c = c.withDefaults()
	t := &Table{c: c, flows: make(map[netip.AddrPort]*flow), perClient: make(map[netip.Addr]int), limit: newLimiter(c.NewFlowsPerSecond, c.NewFlowBurst, c.MaxClients)}
	t.pending.init()
	t.routed.init()
	t.unanswered.init()
	return t
}

// Config returns the bounds in force, defaults filled in.
func (t *Table) Config() Config { return t.c }

// key is the map key of a client: IPv4 addresses of a dual-stack socket
// arrive as IPv4-mapped IPv6 addresses, and are the same client.
func key(from netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
}

// Handle reads one datagram that the client from sent, received at now,
// and says what to do with it. A datagram that is held is copied; the
// caller may reuse its buffer.
func (t *Table) Handle(now time.Time, from netip.AddrPort, datagram []byte) Result {
	from = key(from)
	f := t.flows[from]
	if f == nil {
		return t.start(now, from, datagram)
	}
	switch f.state {
	case routed:
		f.last = now
		if f.answered {
			unlink(f)
			t.routed.pushBack(f)
		}
		return Result{Verdict: Forward, Backend: f.backend}
	case routing:
		// Sent after the hello, before the backend is known: held, and
		// returned by Routed.
		if err := t.hold(f, datagram); err != nil {
			return Result{Err: err}
		}
		return Result{Verdict: Wait}
	}
	p := f.pend
	if len(p.held) >= quic.MaxDatagrams {
		t.remove(f)
		return Result{Err: fmt.Errorf("%w: more than %d datagrams from %s without a whole ClientHello", quic.ErrLimit, quic.MaxDatagrams, from)}
	}
	if err := t.roomFor(p, len(datagram)); err != nil {
		return Result{Err: err}
	}
	for _, h := range p.held {
		if bytes.Equal(h, datagram) {
			return Result{Err: fmt.Errorf("%w of %d bytes from %s", ErrDuplicate, len(datagram), from)}
		}
	}
	done, err := p.asm.AddDatagramAt(now, datagram)
	if err != nil {
		if fatal(err) {
			t.remove(f)
		}
		return Result{Err: err}
	}
	t.hold(f, datagram)
	if !done {
		return Result{Verdict: Wait}
	}
	return t.route(f)
}

// fatal reports whether an error of the Assembler ended the flow (see
// quic.Assembler.AddDatagramAt); the others are about one datagram.
func fatal(err error) bool {
	return !errors.Is(err, quic.ErrUnknownVersion) && !errors.Is(err, quic.ErrNotInitial) &&
		!errors.Is(err, quic.ErrMalformed) && !errors.Is(err, quic.ErrDecrypt)
}

// start begins a flow for a client not in the table, if the datagram
// starts a QUIC connection and the bounds allow. The cheap checks come
// first; the rate limit guards the expensive part, the key derivation and
// decryption.
func (t *Table) start(now time.Time, from netip.AddrPort, datagram []byte) Result {
	if len(datagram) < quic.MinDatagramSize || datagram[0]&0x80 == 0 {
		// What most strays are: the 1-RTT packets of a connection
		// whose flow expired or whose client moved to a new address.
		// Said without formatting, so that a stream of them costs no
		// allocation.
		return Result{Err: errNotInitial}
	}
	if _, err := quic.ParseInitial(datagram); err != nil {
		return Result{Err: err}
	}
	if t.npend >= t.c.MaxPending {
		return Result{Err: ErrPendingFull}
	}
	if t.charged+max(reserve, len(datagram)) > t.c.MaxHeldBytes {
		return Result{Err: ErrBudget}
	}
	client := clientkey.OfAddr(from.Addr())
	if t.perClient[client] >= t.c.MaxFlowsPerClient {
		return Result{Err: ErrClientFlows}
	}
	if !t.limit.allow(now, client) {
		return Result{Err: ErrRate}
	}
	p := &pend{}
	done, err := p.asm.AddDatagramAt(now, datagram)
	if err != nil {
		return Result{Err: err}
	}
	f := &flow{from: from, state: pending, first: now, last: now, pend: p, client: client}
	t.flows[from] = f
	t.perClient[client]++
	t.pending.pushBack(f)
	t.npend++
	p.charged = reserve
	t.charged += reserve
	t.hold(f, datagram)
	if !done {
		return Result{Verdict: Wait}
	}
	return t.route(f)
}

// roomFor checks that n more bytes fit the flow's reservation or the
// budget left.
func (t *Table) roomFor(p *pend, n int) error {
	if extra := p.bytes + n - p.charged; extra > 0 && t.charged+extra > t.c.MaxHeldBytes {
		return ErrBudget
	}
	return nil
}

// hold keeps a copy of datagram for the flow's replay.
func (t *Table) hold(f *flow, datagram []byte) error {
	p := f.pend
	if len(p.held) >= quic.MaxDatagrams {
		return fmt.Errorf("%w: more than %d datagrams held for %s", quic.ErrLimit, quic.MaxDatagrams, f.from)
	}
	if err := t.roomFor(p, len(datagram)); err != nil {
		return err
	}
	p.held = append(p.held, bytes.Clone(datagram))
	p.bytes += len(datagram)
	if p.bytes > p.charged {
		t.charged += p.bytes - p.charged
		p.charged = p.bytes
	}
	return nil
}

// route ends a pending flow's wait for its hello.
func (t *Table) route(f *flow) Result {
	hello, err := f.pend.asm.ClientHello()
	if err != nil {
		t.remove(f)
		return Result{Err: fmt.Errorf("ClientHello from %s: %w", f.from, err)}
	}
	if t.nrouted >= t.c.MaxRouted {
		t.remove(f)
		return Result{Err: fmt.Errorf("%w: %d, limit %d; client %s", ErrRoutedFull, t.nrouted, t.c.MaxRouted, f.from)}
	}
	// The flow waits for its backend now, which may take a slow DNS
	// answer: it leaves the MaxPending slots to flows still assembling
	// their hellos, frees its Assembler (up to 66 KiB), and keeps only
	// its datagrams, charged as what they are, no longer a reservation.
	f.state = routing
	t.nrouted++
	t.npend--
	t.nrouting++
	f.pend.asm = quic.Assembler{}
	t.charged -= f.pend.charged - f.pend.bytes
	f.pend.charged = f.pend.bytes
	f.pend.routeLen = len(f.pend.held)
	return Result{Verdict: Route, ServerName: hello.ServerName(), ALPN: hello.ALPN(), Datagrams: f.pend.held, Hello: hello, First: f.first}
}

// Routed records the backend chosen for the flow of from, after a Route
// verdict, and returns the datagrams the client sent since, to be sent to
// the backend after the Route ones. From now on its datagrams are
// forwarded, and it ends after Config.IdleTimeout without use.
func (t *Table) Routed(now time.Time, from netip.AddrPort, backend any) ([][]byte, error) {
	from = key(from)
	f := t.flows[from]
	if f == nil || f.state != routing {
		return nil, fmt.Errorf("%w: %s", ErrNoFlow, from)
	}
	late := f.pend.held[f.pend.routeLen:]
	t.release(f)
	f.state, f.backend, f.first, f.last = routed, backend, now, now
	t.unanswered.pushBack(f)
	return late, nil
}

// Touch marks the flow of from as used at now, when its backend sent the
// client something, and returns its backend.
func (t *Table) Touch(now time.Time, from netip.AddrPort) (backend any, ok bool) {
	f := t.flows[key(from)]
	if f == nil || f.state != routed {
		return nil, false
	}
	f.last = now
	f.answered = true
	unlink(f)
	t.routed.pushBack(f)
	return f.backend, true
}

// Close ends the flow of from, whatever its state (the backend closed,
// or none was found after Route), and returns its backend if it was
// routed.
func (t *Table) Close(from netip.AddrPort) (backend any, ok bool) {
	f := t.flows[key(from)]
	if f == nil {
		return nil, false
	}
	t.remove(f)
	return f.backend, f.state == routed
}

// Expire ends the pending flows whose first datagram came more than
// quic.MaxAge before now, the routed flows unanswered for more than
// Config.AnswerTimeout since they were routed, and those unused for more
// than Config.IdleTimeout, calling closed (if not nil) with each routed one so
// that the caller closes its backend. It also forgets the token buckets
// that have refilled. Call it every second or so.
func (t *Table) Expire(now time.Time, closed func(from netip.AddrPort, backend any)) {
	for f := t.pending.front(); f != nil && now.Sub(f.first) > quic.MaxAge; f = t.pending.front() {
		t.remove(f)
	}
	for _, l := range []struct {
		list  *list
		since func(*flow) time.Time
		limit time.Duration
	}{
		{&t.unanswered, func(f *flow) time.Time { return f.first }, t.c.AnswerTimeout},
		{&t.routed, func(f *flow) time.Time { return f.last }, t.c.IdleTimeout},
	} {
		for f := l.list.front(); f != nil && now.Sub(l.since(f)) > l.limit; f = l.list.front() {
			t.remove(f)
			if closed != nil {
				closed(f.from, f.backend)
			}
		}
	}
	t.limit.expire(now)
}

// Stats says what the table holds.
func (t *Table) Stats() Stats {
	return Stats{Pending: t.npend, Routing: t.nrouting, Routed: t.nrouted, HeldBytes: t.charged, Clients: len(t.limit.keys)}
}

// release frees a pending or routing flow's held datagrams and budget.
func (t *Table) release(f *flow) {
	unlink(f)
	if f.state == pending {
		t.npend--
	} else {
		t.nrouting--
	}
	t.charged -= f.pend.charged
	f.pend = nil
}

func (t *Table) remove(f *flow) {
	delete(t.flows, f.from)
	if t.perClient[f.client]--; t.perClient[f.client] <= 0 {
		delete(t.perClient, f.client)
	}
	switch f.state {
	case pending:
		t.release(f)
	case routing:
		t.release(f)
		t.nrouted--
	case routed:
		unlink(f)
		t.nrouted--
	}
}
