package dispatch

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"sync"

	"github.com/snitools/snitools/lib/clientkey"
	"github.com/snitools/snitools/lib/rawsys"
)

// Admission control. -max-conns bounds the connections snilisten holds,
// but a connection whose ClientHello has not arrived yet holds its slot
// for nothing: a few hundred clients dribbling hellos would fill every
// slot, and a normal client would wait in the kernel's queue until their
// peek timeouts. Such connections are cheap to drop (no backend, no byte
// relayed, the client can connect again), so when every slot is taken
// and a connection is waiting, the one that has been peeking longest is
// evicted to make room. Connections already relayed or handed off are
// never touched.
//
// And so that one address cannot take every slot with connections that
// are relayed (which are not evicted) or by outnumbering everyone else's
// peeking ones, connections are counted per client (lib/clientkey: an
// IPv4 address or an IPv6 /64), peeking and relayed alike, and a client
// at -max-conns-per-client has its new connections closed at once.
//
// The peek timeout itself does not shrink under pressure: eviction frees
// a slot exactly when someone needs it, where a shorter timeout would
// also close slow but honest clients that nobody was waiting behind.

// DefaultMaxConnsPerClient is the default bound on concurrent connections
// from one client, the same as redirect80's.
const DefaultMaxConnsPerClient = 256

// Outcomes of admission control.
const (
	// OutcomeEvicted: closed while its hello was still awaited, to make
	// room for a new connection when every slot was taken.
	OutcomeEvicted Outcome = "evicted"
	// OutcomeClientLimit: closed at once, its client (address or /64)
	// already holding -max-conns-per-client connections.
	OutcomeClientLimit Outcome = "client_limit"
)

var (
	errEvicted = errors.New("evicted while peeking: every slot was taken and a new connection waited")
)

// admission keeps the connections that are peeking, oldest first, and the
// number of connections each client holds.
type admission struct {
	perClient int // 0: no bound
	mu        sync.Mutex
	clients   map[netip.Addr]int
	oldest    *record // peeking, oldest first
	newest    *record
	peeking   int
}

// admitState is a record's part in admission, guarded by admission.mu.
type admitState struct {
	key        netip.Addr
	counted    bool // in admission.clients
	peeking    bool // in the peeking list
	evicted    bool
	older      *record // neighbours in the peeking list
	newer      *record
	peekCloser io.Closer // closes the connection to evict it
}

func newAdmission(perClient int) *admission {
	return &admission{perClient: perClient, clients: map[netip.Addr]int{}}
}

// admit counts a new connection under its client, unless the client
// already holds its share: then it says so, and the connection is to be
// closed. Connections from trusted fronts are not counted (the front
// speaks for many clients; bounding those is the front's job), nor any
// without a bound.
func (a *admission) admit(r *record, front bool) error {
	if front || a.perClient <= 0 {
		return nil
	}
	key, ok := clientkey.Of(r.client)
	if !ok {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	n := a.clients[key]
	if a.perClient > 0 && n >= a.perClient {
		return fmt.Errorf("client %s already holds %d connections (-max-conns-per-client)", key, n)
	}
	a.clients[key] = n + 1
	r.adm.key, r.adm.counted = key, true
	return nil
}

// startPeek marks r as waiting for its hello (or a front's PROXY header)
// on a connection that closing c evicts.
func (a *admission) startPeek(r *record, c io.Closer) {
	a.mu.Lock()
	defer a.mu.Unlock()
	r.adm.peeking, r.adm.peekCloser = true, c
	r.adm.older, r.adm.newer = a.newest, nil
	if a.newest != nil {
		a.newest.adm.newer = r
	} else {
		a.oldest = r
	}
	a.newest = r
	a.peeking++
}

// endPeek takes r out of the peeking list, its hello read (or the attempt
// over), and reports whether it was evicted meanwhile: then it must not
// go on to a backend, even if its hello arrived in the same moment.
func (a *admission) endPeek(r *record) (evicted bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.unlinkLocked(r)
	return r.adm.evicted
}

func (a *admission) unlinkLocked(r *record) {
	if !r.adm.peeking {
		return
	}
	if r.adm.older != nil {
		r.adm.older.adm.newer = r.adm.newer
	} else {
		a.oldest = r.adm.newer
	}
	if r.adm.newer != nil {
		r.adm.newer.adm.older = r.adm.older
	} else {
		a.newest = r.adm.older
	}
	r.adm.older, r.adm.newer, r.adm.peeking, r.adm.peekCloser = nil, nil, false, nil
	a.peeking--
}

// evictOldest closes the connection that has waited longest for its
// hello, and reports whether there was one. Its own goroutine then ends
// it (OutcomeEvicted) and frees its slot.
func (a *admission) evictOldest() bool {
	a.mu.Lock()
	r := a.oldest
	if r == nil {
		a.mu.Unlock()
		return false
	}
	c := r.adm.peekCloser
	a.unlinkLocked(r)
	r.adm.evicted = true
	a.mu.Unlock()
	c.Close()
	return true
}

// done forgets a finished connection and says how it ended: an evicted
// connection ends OutcomeEvicted whatever its peek made of being closed.
func (a *admission) done(r *record, outcome Outcome, err error) (Outcome, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.unlinkLocked(r)
	if r.adm.counted {
		if n := a.clients[r.adm.key] - 1; n > 0 {
			a.clients[r.adm.key] = n
		} else {
			delete(a.clients, r.adm.key)
		}
		r.adm.counted = false
	}
	if r.adm.evicted && outcome != OutcomeOK && outcome != OutcomeHandoff && outcome != OutcomeEvicted {
		return OutcomeEvicted, errEvicted
	}
	return outcome, err
}

// makeRoom gets a slot for a connection accepted while every slot was
// taken: it evicts the oldest peeking connection, if any, and waits for
// a slot, which the evicted one frees as soon as its goroutine sees the
// close (or, with none to evict, the first connection to finish). It
// reports false if Shutdown cut every connection meanwhile.
func (s *Server) makeRoom() bool {
	if s.group.TrySlot() {
		return true
	}
	s.adm.evictOldest()
	return s.group.TakeSlot()
}

// admitConn admits a connection just accepted, held saying whether the
// accept loop took a slot for it first: a connection whose client holds
// its share is closed (c) and logged, and reported false; otherwise, if
// every slot was taken, room is made (makeRoom).
func (s *Server) admitConn(r *record, held bool, c io.Closer) bool {
	if err := s.adm.admit(r, s.cfg.TrustedFronts.Contains(r.client)); err != nil {
		if held {
			s.group.ReleaseSlot()
		}
		c.Close()
		if s.cfg.Observer != nil {
			s.cfg.Observer.Accepted()
		}
		r.outcome, r.err = OutcomeClientLimit, err
		s.report(r)
		return false
	}
	if !held && !s.makeRoom() {
		c.Close() // cut at Shutdown while waiting for a slot
		return false
	}
	return true
}

// fdCloser closes a raw descriptor, as an io.Closer.
type fdCloser int

func (fd fdCloser) Close() error {
	rawsys.Close(int(fd))
	return nil
}
