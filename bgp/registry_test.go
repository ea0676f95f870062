package bgp

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/amtdns/amtrelay/bgp/bgptest"
)

// quietConfig has a neighbor that never answers: the registry tests need
// running speakers, not sessions.
func quietConfig(t *testing.T, as uint32) Config {
	return testConfig(Neighbor{Address: netip.MustParseAddr(routerIP), RemoteAS: as, Port: bgptest.FreePort(t, routerIP)})
}

func running(s *Speaker) bool { return s.Status().Running }

func TestAcquireSharesEqualConfigs(t *testing.T) {
	cfg := quietConfig(t, routerAS)
	a, releaseA, err := Acquire(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	waitFunc(t, 5*time.Second, "running", func() bool { return running(a) })

	// The same config with a default spelled out is the same speaker.
	same := cfg
	same.Neighbors[0].HoldTime = DefaultHoldTime
	b, releaseB, err := Acquire(same, nil)
	if err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Fatalf("Equal configs got two speakers")
	}
	// A failed reload: the new instance acquired and releases; the old
	// one keeps the speaker running.
	releaseB()
	releaseB() // a second release is no release
	time.Sleep(100 * time.Millisecond)
	if !running(a) {
		t.Fatalf("Speaker stopped while a holder has it")
	}

	// A changed config: a new speaker, the old one running until released.
	changed := cfg
	changed.Neighbors[0].RemoteAS = routerAS + 1
	c, releaseC, err := Acquire(changed, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c == a {
		t.Fatalf("A changed config got the old speaker")
	}
	waitFunc(t, 5*time.Second, "new speaker running", func() bool { return running(c) })
	if !running(a) {
		t.Errorf("Old speaker stopped before its holder released it")
	}
	releaseA()
	if running(a) {
		t.Errorf("Old speaker still running after the last release returned")
	}
	if err := a.Subscribe(context.Background(), func(Batch) {}); err != ErrStopped {
		t.Errorf("Subscribe to a stopped speaker: %v, want ErrStopped", err)
	}

	// After the last release, the next Acquire starts afresh.
	d, releaseD, err := Acquire(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if d == a {
		t.Errorf("Got the stopped speaker back")
	}
	releaseD()
	releaseC()
}

func TestAcquireInvalid(t *testing.T) {
	if _, _, err := Acquire(Config{LocalAS: 1}, nil); err == nil {
		t.Errorf("Acquire of an invalid config succeeded")
	}
}

// TestAcquireListenHandover: a changed config listening on the same
// address starts while the old speaker holds it, and binds it once the old
// one is released.
func TestAcquireListenHandover(t *testing.T) {
	port := bgptest.FreePort(t, speakerIP)
	cfg := quietConfig(t, routerAS)
	cfg.Listen = netip.AddrPortFrom(netip.MustParseAddr(speakerIP), port)
	old, releaseOld, err := Acquire(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	waitFunc(t, 5*time.Second, "old running", func() bool { return running(old) })
	changed := cfg
	changed.LocalAS++
	var log lines
	s, release, err := Acquire(changed, log.logf)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	waitFunc(t, 5*time.Second, "retry logged", func() bool { return log.count("cannot start") == 1 })
	if running(s) {
		t.Fatalf("New speaker running while the old one holds its address")
	}
	releaseOld()
	waitFunc(t, 5*time.Second, "new running", func() bool { return running(s) })
}
