package amt

import "golang.org/x/sys/unix"

// SetReadBuffer sets the tunnel socket's SO_RCVBUF, for tests that fill it.
func (t *Tunnel) SetReadBuffer(n int) error {
	var serr error
	if err := t.sock.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, n) }); err != nil {
		return err
	}
	return serr
}
