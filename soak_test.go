//go:build soak

package amtrelay

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestSoak is a bad day, compressed: 200 Corefile reloads, every fifth one failing after its
// servers were set up (a port that is taken), under query load, with a relay flapping, while the
// sources file is replaced, rewritten, truncated and swapped for a FIFO, a directory and a sparse
// terabyte. Afterwards goroutines, open files and the probe rate must be back where they started,
// and no query may have failed or come back empty. Run it with `make soak`.
func TestSoak(t *testing.T) {
	const reloads = 200
	stable := startResponder(t, "127.0.0.61:0")
	flapping := startResponder(t, "127.0.0.62:0")
	dir := t.TempDir()
	sources := filepath.Join(dir, "sources.txt")
	good := func(v int) string {
		return fmt.Sprintf("# version %d\n198.51.100.0/24 r0 r1\n203.0.113.0/24 r1\n10.%d.0.0/16 r0\n", v, v%250)
	}
	writeFile(t, sources, good(0))
	port := freePort(t)
	_, portNum, _ := net.SplitHostPort(port)
	corefile := func(round int) string {
		return fmt.Sprintf(`in-addr.arpa:%s {
	bind 127.0.0.1
	amtrelay {
		relay r0 %s probe %s
		relay r1 %s probe %s
		sources %s reload 100ms
		source 192.0.2.0/24 r0
		ttl %d
		health_check 100ms timeout 50ms fails 1 rises 1
		all_down serve
	}
}
`, portNum, stable.Addr().Addr(), stable.Addr(), flapping.Addr().Addr(), flapping.Addr(), sources, 30+round%2)
	}
	s := startServer(t, corefile(0))
	expectAddresses(t, s, "127.0.0.61 127.0.0.62")

	// The starting point, measured once everything runs.
	time.Sleep(500 * time.Millisecond)
	goroutines0, files0, rate0 := runtime.NumGoroutine(), openFiles(t), probeRate(stable)

	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	_, takenPort, _ := net.SplitHostPort(taken.Addr().String())

	var (
		stop                                  = make(chan struct{})
		wg                                    sync.WaitGroup
		answers, empty, failed, reloadsFailed atomic.Int64
		refusedBySources                      atomic.Int64
		sourceEvents                          atomic.Int64
	)
	// Query load: two clients asking A for S, which every version of the table has.
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := new(dns.Client)
			c.Timeout = 2 * time.Second
			for {
				select {
				case <-stop:
					return
				default:
				}
				m, _, err := c.Exchange(question(apexS, dns.TypeA), s.udp)
				switch {
				case err != nil || m.Rcode != dns.RcodeSuccess:
					failed.Add(1)
				case len(m.Answer) == 0:
					empty.Add(1)
				default:
					answers.Add(1)
				}
			}
		}()
	}
	// A relay flapping as fast as the probes see it.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(150 * time.Millisecond):
			}
			flapping.Stop()
			time.Sleep(150 * time.Millisecond)
			flapping.Restart()
		}
	}()
	// The sources file on a bad day.
	wg.Add(1)
	go func() {
		defer wg.Done()
		swapIn := func(make func(string) error) {
			tmp := sources + ".odd"
			os.RemoveAll(tmp)
			if make(tmp) == nil {
				os.Rename(tmp, sources)
			}
		}
		for v := 1; ; v++ {
			select {
			case <-stop:
				return
			case <-time.After(150 * time.Millisecond):
			}
			bad := true
			switch v % 7 {
			case 0: // replaced by rename
				replaceFile(t, sources, good(v))
				bad = false
			case 1: // rewritten in place
				os.WriteFile(sources, []byte(good(v)), 0o644)
				bad = false
			case 2: // truncated in the middle of a line
				os.Truncate(sources, int64(len(good(v))-5))
			case 3:
				swapIn(func(p string) error { return syscall.Mkfifo(p, 0o644) })
			case 4:
				swapIn(func(p string) error { return os.Mkdir(p, 0o755) })
			case 5:
				swapIn(func(p string) error { return os.WriteFile(p, nil, 0o644) }) // empty
			case 6:
				swapIn(func(p string) error {
					f, err := os.Create(p)
					if err != nil {
						return err
					}
					defer f.Close()
					return f.Truncate(1 << 40)
				})
			}
			if bad {
				// Bad for a moment, then somebody puts a good file back.
				time.Sleep(100 * time.Millisecond)
				replaceFile(t, sources, good(v))
			}
			sourceEvents.Add(1)
		}
	}()

	start := time.Now()
	for round := 1; round <= reloads; round++ {
		input := corefile(round)
		failing := round%5 == 0
		if failing {
			input += fmt.Sprintf("ip6.arpa:%s {\n\tbind 127.0.0.1\n\tamtrelay {\n\t\trelay r0 %s probe %s\n\t\tsource 2001:db8::/32 r0\n\t\thealth_check 100ms\n\t}\n}\n",
				takenPort, stable.Addr().Addr(), stable.Addr())
		}
		caddyMu.Lock()
		inst, err := s.inst.Restart(corefileInput(input))
		caddyMu.Unlock()
		switch {
		case failing && err == nil:
			t.Fatalf("Reload %d: expected the taken port to fail it", round)
		case failing:
			reloadsFailed.Add(1)
		case err != nil && strings.Contains(err.Error(), "Error during parsing: sources: "+sources):
			// The new Corefile met the sources file in a bad state: it is refused and the one in
			// service stays, as it should.
			refusedBySources.Add(1)
		case err != nil:
			t.Fatalf("Reload %d: %v", round, err)
		default:
			s.inst = inst
		}
		time.Sleep(50 * time.Millisecond)
	}
	elapsed := time.Since(start)
	close(stop)
	wg.Wait()
	if err := flapping.Restart(); err != nil {
		t.Fatal(err)
	}
	replaceFile(t, sources, good(0))
	expectAddresses(t, s, "127.0.0.61 127.0.0.62")

	time.Sleep(time.Second) // a probe interval and a settle time for stragglers to notice
	goroutines1, files1, rate1 := runtime.NumGoroutine(), openFiles(t), probeRate(stable)
	t.Logf("%d reloads in %v: %d failed on the taken port, %d refused for the sources file of the moment; %d sources file events",
		reloads, elapsed.Round(time.Millisecond), reloadsFailed.Load(), refusedBySources.Load(), sourceEvents.Load())
	t.Logf("answers %d, empty %d, failed %d", answers.Load(), empty.Load(), failed.Load())
	t.Logf("goroutines %d -> %d, open files %d -> %d, probes/s at a relay %d -> %d, running instances %d",
		goroutines0, goroutines1, files0, files1, rate0, rate1, runningInstances())
	if failed.Load() != 0 || empty.Load() != 0 || answers.Load() == 0 {
		t.Errorf("%d failed and %d empty answers of %d", failed.Load(), empty.Load(), answers.Load())
	}
	if goroutines1 > goroutines0+2 {
		t.Errorf("Goroutines: %d at the start, %d at the end", goroutines0, goroutines1)
	}
	if files1 > files0+1 { // +1: the listener that holds the taken port
		t.Errorf("Open files: %d at the start, %d at the end: %v", files0, files1, fdTargets())
	}
	if rate1 > rate0*3/2+2 {
		t.Errorf("Probe rate: %d/s at the start, %d/s at the end", rate0, rate1)
	}
	if n := runningInstances(); n != 1 {
		t.Errorf("%d running instances at the end, want 1", n)
	}
}

// fdTargets lists what the process's file descriptors point at.
func fdTargets() []string {
	ents, _ := os.ReadDir("/proc/self/fd")
	var out []string
	for _, e := range ents {
		target, _ := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		out = append(out, e.Name()+"->"+target)
	}
	return out
}

// openFiles counts the files the process has open, each once however many descriptors it has: the
// fewest of a few looks, so that a socket open at the moment of one look does not count.
//
// A file, not a descriptor: a Corefile reload that fails leaves caddy's duplicate of each listener
// it handed to the new instance open until the garbage collector finalizes it. How many are still
// open at the end depends on when the last collection ran, not on what the plugin leaked; a socket
// the plugin leaked is a file of its own.
func openFiles(t *testing.T) int {
	t.Helper()
	fewest := -1
	for range 20 {
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Skipf("No /proc/self/fd: %v", err)
		}
		files := map[string]bool{}
		for _, e := range ents {
			// The directory being read is closed by now: no target.
			if target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); err == nil {
				files[target] = true
			}
		}
		if fewest < 0 || len(files) < fewest {
			fewest = len(files)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fewest
}
