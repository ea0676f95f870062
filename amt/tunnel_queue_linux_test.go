package amt_test

import (
	"bytes"
	"context"
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/amtdns/amtrelay/amt"
	"github.com/amtdns/amtrelay/amt/amttest"
)

// With QueueData an established tunnel leaves Data in its socket, waking
// nobody, until Drain reads all of it.
func TestTunnelQueueDataWaitsForDrain(t *testing.T) {
	r := startResponder(t, "127.0.0.1:0")
	tn, _ := runTunnel(t, r.Addr(), amt.TunnelOptions{Refresh: time.Minute, QueueData: true}, chS, chG, chS2, chG2)
	waitState(t, tn, amt.TunnelEstablished)
	gw := tunnelGateway(tn, r.Addr())
	waitUntil(t, "the joins", func() bool { return hasMembership(r, gw, chS, chG) && hasMembership(r, gw, chS2, chG2) })

	for range 5 {
		r.Inject(chS, chG, []byte("a"))
	}
	r.Inject(chS2, chG2, []byte("b"))
	time.Sleep(100 * time.Millisecond)
	if n, st := tn.Packets(chS, chG), tn.Status(); n != 0 || st.Data != 0 {
		t.Fatalf("%d packets, %d Data read before Drain, want them left in the socket", n, st.Data)
	}
	drained := time.Now()
	tn.Drain()
	if n, n2 := tn.Packets(chS, chG), tn.Packets(chS2, chG2); n != 5 || n2 != 1 {
		t.Errorf("After Drain %d and %d packets, want 5 and 1", n, n2)
	}
	// LastData is when the data was read.
	if last := tn.LastData(chS, chG); last.Before(drained) {
		t.Errorf("LastData %v, before the Drain at %v", last, drained)
	}
	if st := tn.Status(); st.Data != 6 || st.Dropped != 0 || st.Err != nil || st.State != amt.TunnelEstablished {
		t.Errorf("Status %+v", st)
	}
	tn.Drain() // nothing left: nothing changes
	if n := tn.Packets(chS, chG); n != 5 {
		t.Errorf("A second Drain counted %d packets", n)
	}
}

// Datagrams that do not fit in the receive buffer while they wait are
// dropped by the kernel, and counted.
func TestTunnelQueueDataCountsDrops(t *testing.T) {
	r := startResponder(t, "127.0.0.1:0")
	tn, _ := runTunnel(t, r.Addr(), amt.TunnelOptions{Refresh: time.Minute, QueueData: true}, chS, chG)
	waitState(t, tn, amt.TunnelEstablished)
	waitUntil(t, "the join", func() bool { return hasMembership(r, tunnelGateway(tn, r.Addr()), chS, chG) })
	// The kernel's minimum: a few datagrams of this size.
	if err := tn.SetReadBuffer(1); err != nil {
		t.Fatalf("SetReadBuffer: %v", err)
	}
	const sent = 200
	payload := bytes.Repeat([]byte("x"), 1000)
	for range sent {
		r.Inject(chS, chG, payload)
	}
	// The kernel reports the drops with the next datagram it queues: send
	// one after another until every datagram is either read or dropped.
	markers := 0
	waitUntil(t, "every datagram read or dropped", func() bool {
		tn.Drain()
		if tn.Packets(chS, chG)+tn.Status().Dropped == sent+uint64(markers) {
			return true
		}
		r.Inject(chS, chG, []byte("marker"))
		markers++
		return false
	})
	if st := tn.Status(); st.Dropped == 0 || st.Dropped >= sent {
		t.Errorf("Dropped %d of %d, want most but not all (Status %+v)", st.Dropped, sent, st)
	}
}

// With QueueData, an ICMP error that comes while no reply is awaited is still
// handled at once: a refused Update makes the tunnel ask for a Query now, not
// at the next refresh a minute away, and no Drain is needed for it.
func TestTunnelQueueDataRefusedUpdate(t *testing.T) {
	r := startResponder(t, "127.0.0.1:0")
	opts := amt.TunnelOptions{Refresh: time.Minute, ReplyTimeout: 5 * time.Second, QueueData: true}
	tn, _ := runTunnel(t, r.Addr(), opts, chS, chG)
	waitState(t, tn, amt.TunnelEstablished)
	waitUntil(t, "the join", func() bool { return hasMembership(r, tunnelGateway(tn, r.Addr()), chS, chG) })
	requests := tn.Status().Requests
	if err := r.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := tn.Join(chS2, chG2); err != nil { // an Update to a closed port
		t.Fatalf("Join: %v", err)
	}
	waitUntil(t, "a Request after the refusal", func() bool { return tn.Status().Requests > requests })
	waitUntil(t, "the refusal", func() bool { return errors.Is(tn.Status().Err, syscall.ECONNREFUSED) })
}

// When queued Data fills the receive buffer, the kernel drops the ICMP
// error's queue entry but still reports the refusal on the next read: the
// tunnel must still ask for a Query at once.
func TestTunnelQueueDataRefusedUpdateFullBuffer(t *testing.T) {
	r := startResponder(t, "127.0.0.1:0")
	opts := amt.TunnelOptions{Refresh: time.Minute, ReplyTimeout: 5 * time.Second, QueueData: true}
	tn, _ := runTunnel(t, r.Addr(), opts, chS, chG)
	waitState(t, tn, amt.TunnelEstablished)
	waitUntil(t, "the join", func() bool { return hasMembership(r, tunnelGateway(tn, r.Addr()), chS, chG) })
	if err := tn.SetReadBuffer(1); err != nil {
		t.Fatalf("SetReadBuffer: %v", err)
	}
	payload := bytes.Repeat([]byte("x"), 1000)
	for range 20 {
		r.Inject(chS, chG, payload)
	}
	requests := tn.Status().Requests
	if err := r.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := tn.Join(chS2, chG2); err != nil { // an Update to a closed port
		t.Fatalf("Join: %v", err)
	}
	waitUntil(t, "the refusal", func() bool { tn.Drain(); return errors.Is(tn.Status().Err, syscall.ECONNREFUSED) })
	waitUntil(t, "a Request after the refusal", func() bool { return tn.Status().Requests > requests })
}

// BenchmarkTunnelDrain is a canary check's share of the tunnel's work: one
// Drain reading the Data that waited in the socket since the last check
// (20 datagrams: 4 channels at 1 packet/s checked every 5 s).
func BenchmarkTunnelDrain(b *testing.B) {
	r, err := amttest.Start("127.0.0.1:0")
	if err != nil {
		b.Fatalf("Start: %v", err)
	}
	defer r.Stop()
	tn, err := amt.NewTunnel(r.Addr(), amt.TunnelOptions{Refresh: time.Minute, QueueData: true})
	if err != nil {
		b.Fatalf("NewTunnel: %v", err)
	}
	if err := tn.Join(chS, chG); err != nil {
		b.Fatalf("Join: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tn.Run(ctx) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(10 * time.Second)
	for tn.Status().State != amt.TunnelEstablished || len(r.Memberships()) == 0 {
		if time.Now().After(deadline) {
			b.Fatalf("Not joined: %+v", tn.Status())
		}
		time.Sleep(5 * time.Millisecond)
	}

	const perCheck = 20
	payload := make([]byte, 100)
	var want uint64
	tn.Drain() // takes the batch buffers into the pool
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		for range perCheck {
			r.Inject(chS, chG, payload)
		}
		want += perCheck
		deadline := time.Now().Add(10 * time.Second)
		b.StartTimer()
		// Loopback delivers before sendto returns, so one Drain finds
		// everything; the loop only guards against a slow softirq.
		for tn.Drain(); tn.Packets(chS, chG) < want; tn.Drain() {
			if time.Now().After(deadline) {
				b.Fatalf("%d of %d packets read (%+v)", tn.Packets(chS, chG), want, tn.Status())
			}
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*perCheck), "ns/datagram")
}
