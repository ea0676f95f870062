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
	// sendTries: a send can fail once for each ICMP error that arrives
	// meanwhile; more than a few in a row is not that.
	sendTries = 3
)

// send runs write, a send on q's socket, until it succeeds, up to sendTries
// times. A failure may be an ICMP error drawn by an earlier datagram: Linux
// returns the socket's pending error from the next call on it, whichever
// it is, and that call does not send. The error queue is read, which clears
// the error and hands it to whoever it is for, and the send tried again.
func (q *errQueue) send(write func() error) error {
	var err error
	for range sendTries {
		err = write()
		if err == nil || errors.Is(err, net.ErrClosed) {
			return err
		}
		q.drain()
	}
	return err
}

// icmpOpError is the error an error-queue entry stands for: errno, from an
// ICMP error about a datagram that the socket at local (of network udp4 or
// udp6) sent to dst, as a read on a connected socket would have returned it.
func icmpOpError(network string, local netip.AddrPort, dst netip.AddrPort, errno syscall.Errno) error {
	return &net.OpError{Op: "read", Net: network, Source: net.UDPAddrFromAddrPort(local), Addr: net.UDPAddrFromAddrPort(dst), Err: os.NewSyscallError("recvmsg", errno)}
}
