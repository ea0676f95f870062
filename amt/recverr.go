package amt

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"syscall"
)

const (
	// maxErrQueueDrain bounds the error-queue entries read in one go; what
	// is left keeps the socket error set, so the next read comes back for
	// it.
	maxErrQueueDrain = 64
	// sendTries bounds the failures in a row of one send that no ICMP
	// error explains: a local error is not going away.
	sendTries = 3
	// maxSendTries bounds the tries of one send in all. Each failure it
	// allows past sendTries was explained by an error-queue entry, and
	// the kernel sends at most a burst of 50 ICMP errors at once.
	maxSendTries = 64
)

// send runs write, a send on q's socket, until it succeeds. A failure may
// be an ICMP error drawn by an earlier datagram, to anywhere: Linux
// returns the socket's pending error from the next call on it, whichever
// it is, and that call does not send. Under a burst of refusals one send
// can meet several in a row, since every entry read from the queue makes
// the next one pending again. So after each failure the error queue is
// read (which hands each entry to whoever it is for), and a failure counts
// against sendTries only when no entry was read meanwhile, by this
// goroutine or another.
func (q *errQueue) send(write func() error) error {
	var err error
	unexplained := 0
	for range maxSendTries {
		mark := q.mark()
		err = write()
		if err == nil || errors.Is(err, net.ErrClosed) {
			return err
		}
		if !q.drainSince(mark) {
			if unexplained++; unexplained == sendTries {
				break
			}
		}
	}
	return err
}

// icmpOpError is the error an error-queue entry stands for: errno, from an
// ICMP error about a datagram that the socket at local (of network udp4 or
// udp6) sent to dst, as a read on a connected socket would have returned it.
func icmpOpError(network string, local netip.AddrPort, dst netip.AddrPort, errno syscall.Errno) error {
	return &net.OpError{Op: "read", Net: network, Source: net.UDPAddrFromAddrPort(local), Addr: net.UDPAddrFromAddrPort(dst), Err: os.NewSyscallError("recvmsg", errno)}
}
