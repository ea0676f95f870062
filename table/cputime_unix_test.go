//go:build unix

package table

import (
	"syscall"
	"time"
)

// cpuTime returns the CPU time the process has used. On a shared,
// oversubscribed machine wall-clock benchmark figures mostly measure the
// wait for a CPU; CPU time does not include that wait.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
