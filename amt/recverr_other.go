//go:build !linux

package amt

import "net"

// setRecvErr does nothing here: there is no portable way to receive ICMP
// errors on an unconnected UDP socket, so a closed port ends as a timeout.
func setRecvErr(*net.UDPConn, bool) error { return nil }
