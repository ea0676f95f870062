//go:build !linux

package amt

import "syscall"

// controlRecvErr does nothing here: there is no portable way to receive ICMP
// errors on an unconnected UDP socket, so a closed port ends as a timeout.
func controlRecvErr(_, _ string, _ syscall.RawConn) error { return nil }
