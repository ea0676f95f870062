// Package cmdline reads the command lines of the project's commands the one way they all share.
package cmdline

import (
	"errors"
	"flag"
	"fmt"
	"io"
)

// Parse parses args with fs and returns the positional arguments. Flags may come before, between
// and after them (the flag package alone stops at the first positional one). With -h or -help it
// prints usage and fs's flags to stderr and reports help. fs prints nothing itself: the flag
// package would print the whole help on every parse error, and the caller prints one line for
// those.
func Parse(fs *flag.FlagSet, args []string, usage string, stderr io.Writer) (pos []string, help bool, err error) {
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fmt.Fprintln(stderr, usage)
				fs.SetOutput(stderr)
				fs.PrintDefaults()
				return nil, true, nil
			}
			return nil, false, err
		}
		if fs.NArg() == 0 {
			return pos, false, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}
