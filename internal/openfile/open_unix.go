//go:build unix

package openfile

import (
	"os"
	"syscall"
)

// Nonblocking opens path for reading without waiting: open(2) of a
// FIFO blocks until a writer comes, and O_NONBLOCK makes it return at
// once, so that the descriptor can be checked and refused. Reads of a
// regular file are not affected by the flag.
func Nonblocking(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
}
