package listener

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"
)

func testListener(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen on 127.0.0.1:0: %v", err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// Stop closes every tracked listener (or what Replace put in its place),
// and refuses listeners after it.
func TestGroupStopClosesListeners(t *testing.T) {
	g := NewGroup[int](0, DropAccepted)
	a, b := testListener(t), testListener(t)
	if !g.Track(a) || !g.Track(b) {
		t.Fatal("Track refused before Stop")
	}
	replaced := make(chan struct{})
	if !g.Replace(b, closerFunc(func() error { close(replaced); return nil })) {
		t.Fatal("Replace refused before Stop")
	}
	g.Stop()
	if _, err := a.Accept(); err == nil {
		t.Error("Accept on a tracked listener succeeded after Stop")
	}
	select {
	case <-replaced:
	default:
		t.Error("Stop did not close what Replace put in place of the listener")
	}
	if g.Track(testListener(t)) || g.Replace(a, a) || !g.Closing() {
		t.Error("Track or Replace accepted after Stop, or Closing false")
	}
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }

// With DropAccepted, Stop refuses connections and TakeSlot gives up; with
// ServeAccepted, both go on until Cut, and a Serve loop counts as active.
func TestGroupAtStop(t *testing.T) {
	for _, atStop := range []AtStop{DropAccepted, ServeAccepted} {
		g := NewGroup[int](1, atStop)
		ln := testListener(t)
		g.Track(ln)
		if !g.TrySlot() {
			t.Fatal("TrySlot failed with a free slot")
		}
		if g.TrySlot() {
			t.Fatal("TrySlot took a second slot of one")
		}
		waiting := make(chan bool)
		go func() { waiting <- g.TakeSlot() }()
		g.Stop()
		if atStop == DropAccepted {
			if <-waiting {
				t.Error("DropAccepted: TakeSlot took a slot none freed")
			}
			if g.Add(1, nil) {
				t.Error("DropAccepted: Add accepted after Stop")
			}
			if err := g.Wait(context.Background()); err != nil {
				t.Errorf("DropAccepted: Wait: %v", err)
			}
			continue
		}
		if !g.Add(1, nil) {
			t.Error("ServeAccepted: Add refused after Stop, before Cut")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
		if err := g.Wait(ctx); err == nil {
			t.Error("ServeAccepted: Wait returned with a Serve loop and a connection active")
		}
		cancel()
		g.Untrack(ln)
		var cut []int
		go g.Remove(1, nil) // ends once cut
		g.Cut(func(c int) { cut = append(cut, c) })
		if len(cut) > 1 {
			t.Errorf("Cut called its function for %v", cut)
		}
		if <-waiting {
			t.Error("ServeAccepted: TakeSlot took a slot none freed")
		}
		if g.Add(2, nil) || g.BeforeCut(func() {}) {
			t.Error("ServeAccepted: Add or BeforeCut accepted after Cut")
		}
	}
}

// The connection set and its lock: admit and forget run under it, Each
// sees every connection added, and Wait waits for all of them. Run with
// -race.
func TestGroupConnections(t *testing.T) {
	g := NewGroup[int](4, DropAccepted)
	counts := map[int]int{} // guarded by the group's lock, as a server's per-client counts
	var wg sync.WaitGroup
	release := make(chan struct{})
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if !g.TakeSlot() {
				t.Error("TakeSlot gave up before Stop")
				return
			}
			if !g.Add(i, func() bool { counts[i%2]++; return true }) {
				t.Error("Add refused before Stop")
			}
			if i%4 == 0 {
				<-release
			}
			g.Remove(i, func() { counts[i%2]-- })
			g.ReleaseSlot()
		}()
	}
	for g.Len() < 4 { // each of the 4 slots ends up held by a waiting i%4 == 0
		time.Sleep(time.Millisecond)
	}
	seen := 0
	g.Each(func(int) { seen++ })
	if seen != 4 {
		t.Errorf("Each saw %d connections, want 4", seen)
	}
	if g.Add(99, func() bool { return false }) {
		t.Error("Add accepted what admit refused")
	}
	close(release)
	wg.Wait()
	if err := g.Wait(context.Background()); err != nil || g.Len() != 0 || counts[0] != 0 || counts[1] != 0 {
		t.Errorf("after all ended: Wait %v, Len %d, counts %v", err, g.Len(), counts)
	}
}

// A connection's way through the group, as the accept loops take it,
// allocates nothing: the functions given to Add, BeforeCut and Remove
// stay on the caller's stack.
func TestGroupNoAllocation(t *testing.T) {
	g := NewGroup[*int](1, ServeAccepted)
	c, counted, closer := new(int), 0, 0
	allocs := testing.AllocsPerRun(1000, func() {
		if !g.TrySlot() || !g.Add(c, func() bool { counted++; return true }) {
			t.Fatal("refused before Stop")
		}
		g.BeforeCut(func() { closer = *c })
		g.Remove(c, func() { counted-- })
		g.ReleaseSlot()
	})
	if allocs != 0 {
		t.Errorf("a connection's way through the group allocates %v times", allocs)
	}
	_ = closer
}
