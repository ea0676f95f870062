package amtrelay

import (
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// flapBlock has three relays for one source: two with one address each, one with two.
const flapBlock = `amtrelay in-addr.arpa {
	relay a 192.0.2.1
	relay b 192.0.2.2
	relay c 192.0.2.3 192.0.2.4
	source 198.51.100.0/24 a b c
	health_check 1s fails 1 rises 1
	all_down %s
}`

// Every snapshot relayHealth publishes is whole: a relay is up exactly when one of its endpoints is,
// and the count agrees.
func TestHealthSnapshotsAreConsistent(t *testing.T) {
	a := newTestPlugin(t, fmt.Sprintf(flapBlock, "serve"))
	var published []*healthSnapshot
	a.health.publish = func(h *healthSnapshot) { published = append(published, h) }
	rng := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		e := a.cfg.endpoints[rng.IntN(len(a.cfg.endpoints))]
		a.health.observe([]int{e.id}, outcome{ok: rng.IntN(2) == 0, result: "test"})
	}
	if len(published) < 100 || !published[len(published)-1].observed {
		t.Fatalf("Only %d snapshots published in 2000 random outcomes, or never all observed", len(published))
	}
	observed := false
	for n, h := range published {
		up := 0
		for _, r := range a.cfg.relays {
			any := false
			for _, e := range r.endpoints {
				any = any || h.endpointUp[e.id]
			}
			if h.relayUp[r.index] != any {
				t.Fatalf("Snapshot %d: relay %s up %v, its endpoints %v", n, r.name, h.relayUp[r.index], h.endpointUp)
			}
			if any {
				up++
			}
		}
		if up != h.relaysUp || observed && !h.observed {
			t.Fatalf("Snapshot %d: %d relays up, counted %d, observed %v after %v", n, up, h.relaysUp, h.observed, observed)
		}
		observed = h.observed
	}
}

// While relays flap as fast as outcomes arrive, no answer is ever empty: under all_down serve an A
// query for the source gets the up relays, or all of them when none is up.
func TestFlappingNeverAnswersEmpty(t *testing.T) {
	a := newTestPlugin(t, fmt.Sprintf(flapBlock, "serve"))
	var (
		stop           atomic.Bool
		wg             sync.WaitGroup
		answers, empty atomic.Int64
	)
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for !stop.Load() {
				e := a.cfg.endpoints[rng.IntN(len(a.cfg.endpoints))]
				a.health.observe([]int{e.id}, outcome{ok: rng.IntN(2) == 0, result: "test"})
			}
		}()
	}
	q := question(apexS, dns.TypeA)
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		m, _, _ := a.cfg.answer(q, "in-addr.arpa.", a.view.load(), nil)
		answers.Add(1)
		if m == nil || len(m.Answer) == 0 {
			empty.Add(1)
		}
	}
	stop.Store(true)
	wg.Wait()
	t.Logf("%d answers while relays flapped, %d empty", answers.Load(), empty.Load())
	if empty.Load() != 0 {
		t.Errorf("%d of %d answers were empty", empty.Load(), answers.Load())
	}
}

// The same through a real server and real probes: fixture relays refused and answering in turn, as
// fast as the prober allows (100ms, fails 1, rises 1), while clients query; no answer is empty.
func TestFlappingRelaysUnderQueryLoad(t *testing.T) {
	r0 := startResponder(t, "127.0.0.51:0")
	r1 := startResponder(t, "127.0.0.52:0")
	s := startServer(t, fmt.Sprintf(`in-addr.arpa:0 {
	bind 127.0.0.1
	amtrelay {
		relay f0 %s probe %s
		relay f1 %s probe %s
		source 198.51.100.0/24 f0 f1
		health_check 100ms timeout 50ms fails 1 rises 1
		all_down serve
	}
}
`, r0.Addr().Addr(), r0.Addr(), r1.Addr().Addr(), r1.Addr()))

	var (
		stop                    atomic.Bool
		wg                      sync.WaitGroup
		answers, empty, failed  atomic.Int64
		transitionsBefore, flip = transitions(t), 0
	)
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := net.Dial("udp", s.udp)
			if err != nil {
				failed.Add(1)
				return
			}
			defer conn.Close()
			c := &dns.Conn{Conn: conn}
			for !stop.Load() {
				q := question(apexS, dns.TypeA)
				c.SetDeadline(time.Now().Add(2 * time.Second))
				if err := c.WriteMsg(q); err != nil {
					failed.Add(1)
					continue
				}
				m, err := c.ReadMsg()
				if err != nil || m.Rcode != dns.RcodeSuccess {
					failed.Add(1)
					continue
				}
				answers.Add(1)
				if len(m.Answer) == 0 {
					empty.Add(1)
				}
			}
		}()
	}
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); flip++ {
		r := []interface {
			Stop() error
			Restart() error
		}{r0, r1}[flip%2]
		r.Stop()
		time.Sleep(60 * time.Millisecond)
		if err := r.Restart(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(60 * time.Millisecond)
	}
	stop.Store(true)
	wg.Wait()
	moved := transitions(t) - transitionsBefore
	t.Logf("%d answers, %d empty, %d failed; %v relay transitions in 3 s", answers.Load(), empty.Load(), failed.Load(), moved)
	if moved < 4 {
		t.Errorf("Only %v relay transitions: the relays did not flap", moved)
	}
	if empty.Load() != 0 || failed.Load() != 0 {
		t.Errorf("%d empty and %d failed answers of %d", empty.Load(), failed.Load(), answers.Load())
	}
}

// transitions sums relay_transitions_total over every relay.
func transitions(t *testing.T) float64 {
	sum := 0.0
	for k, v := range series(t, "coredns_amtrelay_relay_transitions_total") {
		if strings.Contains(k, "relay=f") {
			sum += v
		}
	}
	return sum
}
