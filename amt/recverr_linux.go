package amt

import (
	"net"
	"os"
	"syscall"
)

// setRecvErr turns on IP_RECVERR / IPV6_RECVERR. Linux reports ICMP errors
// only to connected UDP sockets unless this option is set; the probe socket
// is deliberately unconnected (the answer may come from another address), so
// without it a closed port would look like a silent timeout instead of
// ECONNREFUSED.
func setRecvErr(c *net.UDPConn, v6 bool) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	level, opt := syscall.IPPROTO_IP, syscall.IP_RECVERR
	if v6 {
		level, opt = syscall.IPPROTO_IPV6, syscall.IPV6_RECVERR
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), level, opt, 1)
	}); err != nil {
		return err
	}
	return os.NewSyscallError("setsockopt", serr)
}
