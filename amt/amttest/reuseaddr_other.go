//go:build !unix

package amttest

import "syscall"

// reuseAddr does nothing here: one Responder per data port is then the
// limit.
func reuseAddr(string, string, syscall.RawConn) error { return nil }
