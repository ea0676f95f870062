// Package cputime gives the benchmarks their CPU-time figures. On a shared machine the wall-clock
// time of a benchmark includes the wait for a CPU; the process's CPU time does not (it does include
// the garbage collector's share, which belongs to the code measured).
package cputime
