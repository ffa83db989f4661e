package listener

import (
	"context"
	"io"
	"net"
	"sync"
	"sync/atomic"
)

// Group is what a server that accepts from many listeners tracks, shared
// by snilisten (lib/dispatch) and redirect80 (lib/redirect) so that both
// stop the same way: the listeners being served, the connections held
// (of type C), their slots (-max-conns), and the shutdown sequence: Stop
// closes the listeners, Wait lets what is active finish until a deadline,
// Cut ends the rest. What a connection is, how it is cut, and what to do
// when the slots are full (evict, reap) stays with each server.
type Group[C comparable] struct {
	atStop    AtStop
	slots     chan struct{} // one token per allowed connection; nil: no bound
	refused   chan struct{} // closed when connections are refused: TakeSlot gives up
	closing   atomic.Bool   // Stop has begun; read without the lock on request paths
	active    sync.WaitGroup
	mu        sync.Mutex
	listeners map[net.Listener]io.Closer // closed by Stop to end a Serve
	conns     map[C]struct{}
	refusing  bool // Add refuses: after Stop or Cut, as atStop says
	cut       bool // Cut has begun
}

// AtStop says what becomes of a connection an accept loop takes in the
// moment Stop closes its listener.
type AtStop bool

const (
	// DropAccepted: Stop ends taking connections (Add refuses, TakeSlot
	// gives up), and Wait does not wait for the accept loops.
	DropAccepted AtStop = false
	// ServeAccepted: an accept loop counts as active from Track to
	// Untrack, and connections are taken until Cut, so that one accepted
	// in the moment its listener closed is served, not dropped (under
	// socket activation, every connection the kernel queued is either
	// served or left queued for the next run).
	ServeAccepted AtStop = true
)

// NewGroup returns a Group bounding connections to maxConns (0: no bound).
func NewGroup[C comparable](maxConns int, atStop AtStop) *Group[C] {
	g := &Group[C]{
		atStop:    atStop,
		refused:   make(chan struct{}),
		listeners: map[net.Listener]io.Closer{},
		conns:     map[C]struct{}{},
	}
	if maxConns > 0 {
		g.slots = make(chan struct{}, maxConns)
	}
	return g
}

// Track registers a listener about to be served, unless Stop has begun.
func (g *Group[C]) Track(ln net.Listener) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closing.Load() {
		return false
	}
	g.listeners[ln] = ln
	if g.atStop == ServeAccepted {
		g.active.Add(1)
	}
	return true
}

// Replace makes Stop close stop instead of ln to end ln's Serve (one
// waiting on a duplicate of ln's socket, say), unless Stop has begun.
func (g *Group[C]) Replace(ln net.Listener, stop io.Closer) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closing.Load() {
		return false
	}
	g.listeners[ln] = stop
	return true
}

// Untrack forgets a listener whose Serve returns.
func (g *Group[C]) Untrack(ln net.Listener) {
	g.mu.Lock()
	delete(g.listeners, ln)
	g.mu.Unlock()
	if g.atStop == ServeAccepted {
		g.active.Done()
	}
}

// Closing reports whether Stop has begun. It takes no lock.
func (g *Group[C]) Closing() bool { return g.closing.Load() }

// TrySlot takes a slot if one is free, or if there is no bound.
func (g *Group[C]) TrySlot() bool {
	if g.slots == nil {
		return true
	}
	select {
	case g.slots <- struct{}{}:
		return true
	default:
		return false
	}
}

// TakeSlot waits for a free slot, and gives up (false) when connections
// are refused (see AtStop).
func (g *Group[C]) TakeSlot() bool {
	if g.slots == nil {
		return true
	}
	select {
	case g.slots <- struct{}{}:
		return true
	case <-g.refused:
		return false
	}
}

// ReleaseSlot frees a slot taken by TrySlot or TakeSlot.
func (g *Group[C]) ReleaseSlot() {
	if g.slots != nil {
		<-g.slots
	}
}

// Add registers a connection as active, unless connections are refused
// (see AtStop) or admit, if not nil, says no. admit runs under the lock
// that guards the connections, for a server's own bookkeeping that must
// agree with them (per-client counts).
func (g *Group[C]) Add(c C, admit func() bool) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.refusing || admit != nil && !admit() {
		return false
	}
	g.conns[c] = struct{}{}
	g.active.Add(1)
	return true
}

// Remove forgets a connection that has ended; forget, if not nil, runs
// under the lock, as Add's admit did.
func (g *Group[C]) Remove(c C, forget func()) {
	g.mu.Lock()
	delete(g.conns, c)
	if forget != nil {
		forget()
	}
	g.mu.Unlock()
	g.active.Done()
}

// Each calls f for every connection held, under the lock: f must not
// block, nor call the Group.
func (g *Group[C]) Each(f func(C)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for c := range g.conns {
		f(c)
	}
}

// BeforeCut runs f under the lock unless Cut has begun, and reports
// whether it did: what f sets (how to cut a connection), Cut's function
// then sees; if false, it is for the caller to cut.
func (g *Group[C]) BeforeCut(f func()) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.cut {
		return false
	}
	f()
	return true
}

// Len returns the number of connections held.
func (g *Group[C]) Len() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.conns)
}

// Stop stops accepting: it closes every listener (their Serves then
// end) and refuses new listeners, and, with DropAccepted, new connections.
func (g *Group[C]) Stop() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.closing.Swap(true) && g.atStop == DropAccepted {
		g.refuseLocked()
	}
	for _, stop := range g.listeners {
		stop.Close()
	}
}

func (g *Group[C]) refuseLocked() {
	if !g.refusing {
		g.refusing = true
		close(g.refused)
	}
}

// Wait waits until nothing is active, or ctx is done: then it returns
// ctx's error.
func (g *Group[C]) Wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() { g.active.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Cut refuses new connections, calls cut for every connection held, under
// the lock (it must not block), and waits until nothing is active.
func (g *Group[C]) Cut(cut func(C)) {
	g.mu.Lock()
	g.cut = true
	g.refuseLocked()
	for c := range g.conns {
		cut(c)
	}
	g.mu.Unlock()
	g.active.Wait()
}
