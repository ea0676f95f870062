// Package openfile opens the files an operator names (the sources file,
// key files) without waiting on them: a FIFO put at such a path must not
// hang start-up, a reload or a shutdown.
package openfile
