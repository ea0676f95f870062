package main

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/amtdns/amtrelay/amt"
)

// fakeRelays stands in for amt.Client.Handshake: each target's handshake starts
// (reported on started), then returns what the test sends on its channel,
// or a cancelled result when the race's context ends first, as the real
// one does.
type fakeRelays struct {
	started chan netip.AddrPort
	replies map[netip.AddrPort]chan amt.HandshakeReply
	// ignoreCancel makes a target's handshake wait for its reply even
	// after cancellation, to model a Query already on its way.
	ignoreCancel map[netip.AddrPort]bool
}

func newFakeRelays(targets []netip.AddrPort) *fakeRelays {
	f := &fakeRelays{started: make(chan netip.AddrPort, len(targets)), replies: map[netip.AddrPort]chan amt.HandshakeReply{}, ignoreCancel: map[netip.AddrPort]bool{}}
	for _, t := range targets {
		f.replies[t] = make(chan amt.HandshakeReply, 1)
	}
	return f
}

func (f *fakeRelays) handshake(ctx context.Context, target netip.AddrPort, _ time.Duration) amt.HandshakeReply {
	f.started <- target
	if f.ignoreCancel[target] {
		return <-f.replies[target]
	}
	select {
	case r := <-f.replies[target]:
		return r
	case <-ctx.Done():
		return amt.HandshakeReply{Result: amt.ResultError, Step: amt.StepRequest, Err: ctx.Err()}
	}
}

// fakeStagger hands out one channel per stagger delay asked for; the test
// fires them.
type fakeStagger struct{ asked chan chan time.Time }

func (s *fakeStagger) after(time.Duration) <-chan time.Time {
	c := make(chan time.Time, 1)
	s.asked <- c
	return c
}

func raceSetup(n int) ([]candidate, []netip.AddrPort, *fakeRelays, *fakeStagger) {
	var cands []candidate
	var targets []netip.AddrPort
	for i := range n {
		a := netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)})
		cands = append(cands, candidate{Addr: a, Origin: "driad", Precedence: i})
		targets = append(targets, netip.AddrPortFrom(a, amtPort))
	}
	return cands, targets, newFakeRelays(targets), &fakeStagger{asked: make(chan chan time.Time, n)}
}

func recv[T any](t *testing.T, what string, c <-chan T) T {
	t.Helper()
	select {
	case v := <-c:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("Timed out waiting for %s", what)
	}
	panic("unreachable")
}

// quiet checks that nothing arrives on c for a moment: it cannot make a
// test pass wrongly, only miss something very late.
func quiet[T any](t *testing.T, what string, c <-chan T) {
	t.Helper()
	select {
	case v := <-c:
		t.Fatalf("Unexpected %s: %v", what, v)
	case <-time.After(50 * time.Millisecond):
	}
}

type raceResult struct {
	at     []attempt
	winner int
}

func startRace(ctx context.Context, cands []candidate, targets []netip.AddrPort, f *fakeRelays, s *fakeStagger) <-chan raceResult {
	done := make(chan raceResult, 1)
	rc := racer{handshake: f.handshake, timeout: time.Second, stagger: 250 * time.Millisecond, after: s.after}
	go func() {
		at, w := rc.race(ctx, cands, targets)
		done <- raceResult{at, w}
	}()
	return done
}

func outcomes(at []attempt) []string {
	var o []string
	for _, a := range at {
		o = append(o, a.Outcome)
	}
	return o
}

func wantRace(t *testing.T, r raceResult, winner int, want ...string) {
	t.Helper()
	if r.winner != winner {
		t.Errorf("Winner %d, want %d", r.winner, winner)
	}
	got := outcomes(r.at)
	if len(got) != len(want) {
		t.Fatalf("Outcomes %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("Outcomes %q, want %q", got, want)
			break
		}
	}
}

// The second attempt starts only when the stagger delay passes, while the
// first keeps running; the second wins, the first is cancelled, the third
// never starts.
func TestRaceStagger(t *testing.T) {
	cands, targets, f, s := raceSetup(3)
	done := startRace(context.Background(), cands, targets, f, s)
	if got := recv(t, "the first start", f.started); got != targets[0] {
		t.Fatalf("Started %v first", got)
	}
	fire := recv(t, "the first stagger", s.asked)
	quiet(t, "start before the stagger delay", f.started)
	fire <- time.Now()
	if got := recv(t, "the second start", f.started); got != targets[1] {
		t.Fatalf("Started %v second", got)
	}
	recv(t, "the second stagger", s.asked)
	f.replies[targets[1]] <- amt.HandshakeReply{Result: amt.ResultOK, Step: amt.StepRequest}
	r := recv(t, "the race", done)
	wantRace(t, r, 1, "cancelled", "won", "not_started")
	if !r.at[0].Started.Before(r.at[1].Started) || r.at[2].Started.IsZero() != true {
		t.Errorf("Start times %v %v %v", r.at[0].Started, r.at[1].Started, r.at[2].Started)
	}
	if len(f.started) != 0 {
		t.Errorf("The third relay was started")
	}
}

// A failure starts the next attempt at once, without waiting for the
// stagger delay (which the test never fires).
func TestRaceFailureStartsNext(t *testing.T) {
	cands, targets, f, s := raceSetup(3)
	done := startRace(context.Background(), cands, targets, f, s)
	recv(t, "the first start", f.started)
	recv(t, "the first stagger", s.asked)
	f.replies[targets[0]] <- amt.HandshakeReply{Result: amt.ResultLimit, Step: amt.StepRequest}
	if got := recv(t, "the second start", f.started); got != targets[1] {
		t.Fatalf("Started %v after the failure", got)
	}
	recv(t, "the second stagger", s.asked)
	f.replies[targets[1]] <- amt.HandshakeReply{Result: amt.ResultRefused}
	recv(t, "the third start", f.started)
	f.replies[targets[2]] <- amt.HandshakeReply{Result: amt.ResultNoQuery, Step: amt.StepRequest}
	r := recv(t, "the race", done)
	wantRace(t, r, -1, "limit", "refused", "no_query")
	if len(s.asked) != 0 {
		t.Errorf("A stagger delay was started after the last attempt")
	}
}

// Two attempts connect: the first Query wins, the later one is "slower".
func TestRaceSlower(t *testing.T) {
	cands, targets, f, s := raceSetup(2)
	f.ignoreCancel[targets[0]] = true
	done := startRace(context.Background(), cands, targets, f, s)
	recv(t, "the first start", f.started)
	recv(t, "the first stagger", s.asked) <- time.Now()
	recv(t, "the second start", f.started)
	f.replies[targets[1]] <- amt.HandshakeReply{Result: amt.ResultOK, Step: amt.StepRequest}
	quiet(t, "the end of the race with an attempt running", done)
	f.replies[targets[0]] <- amt.HandshakeReply{Result: amt.ResultOK, Step: amt.StepRequest}
	wantRace(t, recv(t, "the race", done), 1, "slower", "won")
}

// An interrupt ends the race: running attempts are interrupted, the rest
// never start.
func TestRaceInterrupted(t *testing.T) {
	cands, targets, f, s := raceSetup(3)
	ctx, cancel := context.WithCancel(context.Background())
	done := startRace(ctx, cands, targets, f, s)
	recv(t, "the first start", f.started)
	recv(t, "the first stagger", s.asked) <- time.Now()
	recv(t, "the second start", f.started)
	cancel()
	wantRace(t, recv(t, "the race", done), -1, "interrupted", "interrupted", "interrupted")
	if len(f.started) != 0 {
		t.Errorf("The third relay was started")
	}
}

func TestRaceNothing(t *testing.T) {
	at, w := racer{}.race(context.Background(), nil, nil)
	if len(at) != 0 || w != -1 {
		t.Errorf("Empty race: %v %d", at, w)
	}
}
