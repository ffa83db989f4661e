package quicflow

import (
	"net/netip"
	"time"
)

// limiter is a token bucket per client key (lib/clientkey): each new
// flow takes a token, and a key gets rate tokens a second up to burst.
// At most max keys are kept; a new key evicts the least recently used,
// which (unless the table is flooded by more keys than max) has long
// refilled its bucket anyway, so that forgetting it loses nothing.
type limiter struct {
	rate  float64 // tokens a second; <= 0: no limit
	burst float64
	max   int

	keys map[netip.Addr]*bucket
	lru  bucket // sentinel of the list of buckets, least recently used first
}

type bucket struct {
	key        netip.Addr
	tokens     float64
	last       time.Time
	prev, next *bucket
}

func newLimiter(rate float64, burst, max int) *limiter {
	l := &limiter{rate: rate, burst: float64(burst), max: max, keys: make(map[netip.Addr]*bucket)}
	l.lru.prev, l.lru.next = &l.lru, &l.lru
	return l
}

// allow takes a token of key at time now, if it has one.
func (l *limiter) allow(now time.Time, key netip.Addr) bool {
	if l.rate <= 0 {
		return true
	}
	b := l.keys[key]
	if b == nil {
		if len(l.keys) >= l.max {
			l.remove(l.lru.next)
		}
		b = &bucket{key: key, tokens: l.burst, last: now}
		l.keys[key] = b
	} else {
		b.unlink()
		if d := now.Sub(b.last); d > 0 {
			b.tokens = min(l.burst, b.tokens+d.Seconds()*l.rate)
			b.last = now
		}
	}
	b.prev, b.next = l.lru.prev, &l.lru
	b.prev.next, l.lru.prev = b, b
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// expire forgets the keys whose buckets are full again at now: they
// would allow exactly what a new key allows.
func (l *limiter) expire(now time.Time) {
	if l.rate <= 0 {
		return
	}
	full := time.Duration(l.burst / l.rate * float64(time.Second))
	for b := l.lru.next; b != &l.lru && now.Sub(b.last) >= full; b = l.lru.next {
		l.remove(b)
	}
}

func (l *limiter) remove(b *bucket) {
	b.unlink()
	delete(l.keys, b.key)
}

func (b *bucket) unlink() {
	b.prev.next, b.next.prev = b.next, b.prev
	b.prev, b.next = nil, nil
}
