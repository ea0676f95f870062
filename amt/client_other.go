//go:build !linux

package amt

// drainErrQueue does nothing here: unconnected UDP sockets get no ICMP
// errors, so a closed port ends as a timeout, as with the package
// functions.
func (e *endpoint) drainErrQueue() int { return 0 }
