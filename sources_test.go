package amtrelay

import (
	"bytes"
	"context"
	"fmt"
	golog "log"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/amtdns/amtrelay/table"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// parseIn parses a Corefile fragment whose root directory is dir.
func parseIn(t *testing.T, dir, input string) (*config, error) {
	t.Helper()
	c := caddy.NewTestController("dns", input)
	c.ServerBlockKeys = []string{"in-addr.arpa."}
	dnsserver.GetConfig(c).Root = dir
	return parse(c)
}

// relaysOf names the relays the table gives for addr, or "-" when the address is not covered.
func relaysOf(cfg *config, addr string) string {
	ids, ok := cfg.sources.Lookup(netip.MustParseAddr(addr))
	if !ok {
		return "-"
	}
	names := make([]string, len(ids))
	for i, id := range ids {
		names[i] = cfg.relays[id].name
	}
	return strings.Join(names, " ")
}

func TestParseSources(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "sources.txt"), "# lab\n198.51.100.0/24 r1\n2001:db8:100::/48 r2\n")
	abs := filepath.Join(t.TempDir(), "abs.txt")
	writeFile(t, abs, "203.0.113.7 r2\n")

	tests := []struct {
		name     string
		property string
		path     string
		interval time.Duration
	}{
		{"relative to root, default reload", "sources sources.txt", filepath.Join(dir, "sources.txt"), 5 * time.Second},
		{"absolute", "sources " + abs, abs, 5 * time.Second},
		{"reload interval", "sources sources.txt reload 150ms", filepath.Join(dir, "sources.txt"), 150 * time.Millisecond},
		{"reload 0 reads once", "sources sources.txt reload 0", filepath.Join(dir, "sources.txt"), 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// No inline source line: the file alone is enough.
			cfg, err := parseIn(t, dir, "amtrelay {\nrelay r1 192.0.2.1\nrelay r2 192.0.2.2\n"+tc.property+"\n}")
			if err != nil {
				t.Fatalf("Unexpected error: %v", err)
			}
			if cfg.sources.file != tc.path || cfg.sources.interval != tc.interval {
				t.Errorf("Expected file %q every %v, got %q every %v", tc.path, tc.interval, cfg.sources.file, cfg.sources.interval)
			}
			if cfg.sources.Len() == 0 {
				t.Errorf("Expected the file to be loaded at parse time")
			}
		})
	}
}

func TestParseSourcesErrors(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"unknown.txt":   "198.51.100.0/24 r1\n203.0.113.0/24 r1 r9\n",
		"prefix.txt":    "# header\n198.51.100.0/33 r1\n",
		"hostbits.txt":  "198.51.100.7/24 r1\n",
		"dup.txt":       "198.51.100.0/24 r1\n\n198.51.100.0/24 r1\n",
		"norelay.txt":   "198.51.100.0/24\n",
		"truncated.txt": "198.51.100.0/24 r1\n203.0.1",
		"empty.txt":     "",
		"good.txt":      "198.51.100.0/24 r1\n",
	}
	for name, content := range files {
		writeFile(t, filepath.Join(dir, name), content)
	}
	if err := os.Mkdir(filepath.Join(dir, "adir"), 0o755); err != nil {
		t.Fatal(err)
	}
	const relay = "relay r1 192.0.2.1\n"
	tests := []struct {
		name  string
		input string
		err   []string // substrings of the error
		line  int      // the Corefile line the error must name
	}{
		{"no file", "amtrelay {\n" + relay + "sources\n}", []string{"Wrong argument count"}, 3},
		{"unknown option", "amtrelay {\n" + relay + "sources good.txt every 5s\n}", []string{`unknown option "every"`}, 3},
		{"reload without duration", "amtrelay {\n" + relay + "sources good.txt reload\n}", []string{"needs a duration"}, 3},
		{"reload not a duration", "amtrelay {\n" + relay + "sources good.txt reload soon\n}", []string{"reload", "soon"}, 3},
		{"reload negative", "amtrelay {\n" + relay + "sources good.txt reload -1s\n}", []string{"negative"}, 3},
		{"too many arguments", "amtrelay {\n" + relay + "sources good.txt reload 1s more\n}", []string{"Wrong argument count"}, 3},
		{"given twice", "amtrelay {\n" + relay + "sources good.txt\nsources good.txt\n}", []string{"sources given twice"}, 4},
		{"neither source nor sources", "amtrelay {\n" + relay + "}", []string{"no source or sources file defined"}, 0},
		{"no relay", "amtrelay {\nsources good.txt\n}", []string{"no relay defined"}, 0},
		{"inline unknown relay", "amtrelay {\n" + relay + "sources good.txt\nsource 203.0.113.0/24 r9\n}", []string{`unknown relay "r9"`}, 4},
		{"nonexistent file", "amtrelay {\n" + relay + "sources missing.txt\n}",
			[]string{filepath.Join(dir, "missing.txt"), "no such file"}, 3},
		{"directory", "amtrelay {\n" + relay + "sources adir\n}", []string{filepath.Join(dir, "adir"), "directory"}, 3},
		{"unknown relay in file", "amtrelay {\n" + relay + "sources unknown.txt\n}",
			[]string{filepath.Join(dir, "unknown.txt") + `:2: unknown relay "r9"`}, 3},
		{"bad prefix in file", "amtrelay {\n" + relay + "sources prefix.txt\n}",
			[]string{filepath.Join(dir, "prefix.txt") + ":2: bad prefix"}, 3},
		{"host bits in file", "amtrelay {\n" + relay + "sources hostbits.txt\n}",
			[]string{filepath.Join(dir, "hostbits.txt") + ":1: ", "host bits"}, 3},
		{"duplicate in file", "amtrelay {\n" + relay + "sources dup.txt\n}",
			[]string{filepath.Join(dir, "dup.txt") + ":3: ", "duplicate, first at line 1"}, 3},
		{"no relays in file", "amtrelay {\n" + relay + "sources norelay.txt\n}",
			[]string{filepath.Join(dir, "norelay.txt") + ":1: no relays"}, 3},
		{"truncated mid-write", "amtrelay {\n" + relay + "sources truncated.txt\n}",
			[]string{filepath.Join(dir, "truncated.txt") + ":2: bad prefix"}, 3},
		{"empty file", "amtrelay {\n" + relay + "sources empty.txt\n}",
			[]string{filepath.Join(dir, "empty.txt"), "empty file"}, 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := parseIn(t, dir, tc.input)
			if err == nil {
				t.Fatalf("Expected an error, got config %+v", cfg)
			}
			for _, want := range tc.err {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("Expected the error to contain %q, got %q", want, err)
				}
			}
			if tc.line > 0 && !strings.Contains(err.Error(), ":"+strconv.Itoa(tc.line)+" ") {
				t.Errorf("Expected the error to name Corefile line %d, got %q", tc.line, err)
			}
		})
	}
}

func TestSourcesInlineWinsOverFile(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "s.txt"), "198.51.100.0/24 r1\n203.0.113.0/24 r1\n")
	cfg, err := parseIn(t, dir, `amtrelay {
		relay r1 192.0.2.1
		relay r2 192.0.2.2
		sources s.txt
		source 198.51.100.0/24 r2
		source 192.0.2.128/25 r2
	}`)
	if err != nil {
		t.Fatalf("Unexpected error: %v", err)
	}
	for addr, want := range map[string]string{
		"198.51.100.1": "r2", // in both: the Corefile wins
		"203.0.113.1":  "r1", // file only
		"192.0.2.200":  "r2", // Corefile only
		"192.0.2.1":    "-",
	} {
		if got := relaysOf(cfg, addr); got != want {
			t.Errorf("Relays of %s: expected %q, got %q", addr, want, got)
		}
	}

	// The Corefile keeps winning in every table a reload builds.
	writeFile(t, filepath.Join(dir, "s.txt"), "198.51.100.0/24 r1\n203.0.113.0/24 r2\n# v2\n")
	cfg.sources.reload(context.Background())
	if got := relaysOf(cfg, "203.0.113.1"); got != "r2" {
		t.Fatalf("Expected the reload to take effect, got %q", got)
	}
	if got := relaysOf(cfg, "198.51.100.1"); got != "r2" {
		t.Errorf("Expected the inline line to win after a reload, got %q", got)
	}
	if got := cfg.sources.Len(); got != 3 {
		t.Errorf("Expected 3 prefixes (2 from the file, 1 more inline), got %d", got)
	}
}

// captureLog collects what the plugin logs during the test.
func captureLog(t *testing.T) *syncBuffer {
	t.Helper()
	var buf syncBuffer
	golog.SetOutput(&buf)
	t.Cleanup(func() { golog.SetOutput(os.Stderr) })
	return &buf
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestSourcesReloadKeepsOldTableOnError(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "s.txt")
	writeFile(t, path, "198.51.100.0/24 r1\n")
	cfg, err := parseIn(t, dir, "amtrelay {\nrelay r1 192.0.2.1\nrelay r2 192.0.2.2\nsources s.txt\n}")
	if err != nil {
		t.Fatalf("Unexpected error: %v", err)
	}
	st := cfg.sources
	logs := captureLog(t)
	errorCount := func() float64 { return testutil.ToFloat64(tableReloads.WithLabelValues("error")) }
	successes := func() float64 { return testutil.ToFloat64(tableReloads.WithLabelValues("success")) }
	errBefore, okBefore := errorCount(), successes()
	ctx := context.Background()

	// An unchanged file, even touched, is no reload.
	later := time.Now().Add(time.Minute)
	if err := os.Chtimes(path, later, later); err != nil {
		t.Fatal(err)
	}
	st.reload(ctx)
	if d := successes() - okBefore; d != 0 {
		t.Errorf("Expected no reload for a touched file, got %v", d)
	}

	// A broken version: the old table stays, the error is logged with file and line, and counted.
	writeFile(t, path, "198.51.100.0/24 r2\n203.0.113.0/24 r9\n")
	st.reload(ctx)
	if got := relaysOf(cfg, "198.51.100.1"); got != "r1" {
		t.Errorf("Expected the old table after a failed reload, got %q", got)
	}
	if d := errorCount() - errBefore; d != 1 {
		t.Errorf("Expected one error counted, got %v", d)
	}
	want := path + `:2: unknown relay "r9"`
	if n := strings.Count(logs.String(), want); n != 1 {
		t.Errorf("Expected one log line with %q, got %d in %q", want, n, logs)
	}

	// The same broken file, checked again, rewritten the same or touched, is not reported again.
	st.reload(ctx)
	writeFile(t, path, "198.51.100.0/24 r2\n203.0.113.0/24 r9\n")
	st.reload(ctx)
	if d := errorCount() - errBefore; d != 1 {
		t.Errorf("Expected the repeated error to be counted once, got %v", d)
	}
	if n := strings.Count(logs.String(), want); n != 1 {
		t.Errorf("Expected the repeated error to be logged once, got %d times", n)
	}

	// A file truncated in the middle of a line is another error, and still the old table.
	writeFile(t, path, "198.51.100.0/24 r2\n203.0.11")
	st.reload(ctx)
	if got := relaysOf(cfg, "198.51.100.1"); got != "r1" {
		t.Errorf("Expected the old table after a truncated file, got %q", got)
	}
	if d := errorCount() - errBefore; d != 2 {
		t.Errorf("Expected a second error counted, got %v", d)
	}

	// A file caught between truncation and the first write is not an empty table.
	writeFile(t, path, "")
	st.reload(ctx)
	if got := relaysOf(cfg, "198.51.100.1"); got != "r1" {
		t.Errorf("Expected the old table after an empty file, got %q", got)
	}

	// A good file ends it.
	writeFile(t, path, "198.51.100.0/24 r2\n203.0.113.0/24 r1\n")
	st.reload(ctx)
	if got := relaysOf(cfg, "198.51.100.1") + "," + relaysOf(cfg, "203.0.113.1"); got != "r2,r1" {
		t.Errorf("Expected the new table, got %q", got)
	}
	if d := successes() - okBefore; d != 1 {
		t.Errorf("Expected one successful reload, got %v", d)
	}

	// A file that goes missing is reported once; back unchanged, nothing to load, and a later
	// disappearance is reported again.
	errBefore = errorCount()
	if err := os.Rename(path, path+".away"); err != nil {
		t.Fatal(err)
	}
	st.reload(ctx)
	st.reload(ctx)
	if d := errorCount() - errBefore; d != 1 {
		t.Errorf("Expected a missing file to be counted once, got %v", d)
	}
	if err := os.Rename(path+".away", path); err != nil {
		t.Fatal(err)
	}
	st.reload(ctx)
	if d := successes() - okBefore; d != 1 {
		t.Errorf("Expected no reload for the same file back, got %v", d)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	st.reload(ctx)
	if d := errorCount() - errBefore; d != 2 {
		t.Errorf("Expected the second disappearance to be counted, got %v", d)
	}
	if got := relaysOf(cfg, "198.51.100.1"); got != "r2" {
		t.Errorf("Expected the table to outlive its file, got %q", got)
	}
}

// A reload of a big file that changed in a few lines applies those lines to the table in service
// (the log says how many); one with a bad line among them is reported with its line number, as a
// whole parse would.
func TestSourcesReloadAppliesChangedLines(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "s.txt")
	lines := make([]string, 4096)
	for i := range lines {
		lines[i] = fmt.Sprintf("10.%d.%d.0/24 r1", i/256, i%256)
	}
	write := func() { writeFile(t, path, strings.Join(lines, "\n")+"\n") }
	write()
	cfg, err := parseIn(t, dir, "amtrelay {\nrelay r1 192.0.2.1\nrelay r2 192.0.2.2\nsources s.txt\nsource 10.0.9.0/24 r1\n}")
	if err != nil {
		t.Fatalf("Unexpected error: %v", err)
	}
	logs := captureLog(t)
	ctx := context.Background()

	lines[7] = "10.0.7.0/24 r2"     // other relays
	lines[8] = "# 10.0.8.0/24 gone" // removed
	lines[9] = "10.0.9.0/24 r2"     // hidden by the inline line
	lines = append(lines, "203.0.113.0/24 r2")
	write()
	cfg.sources.reload(ctx)
	for addr, want := range map[string]string{
		"10.0.7.1": "r2", "10.0.8.1": "-", "10.0.9.1": "r1", "203.0.113.1": "r2", "10.15.255.1": "r1",
	} {
		if got := relaysOf(cfg, addr); got != want {
			t.Errorf("Relays of %s: expected %q, got %q", addr, want, got)
		}
	}
	if want := "4096 prefixes, 7 changed lines applied"; !strings.Contains(logs.String(), want) {
		t.Errorf("Expected the log to say %q, got %q", want, logs)
	}

	lines[100] = "10.0.100.0/24 r3"
	write()
	cfg.sources.reload(ctx)
	if want := path + `:101: unknown relay "r3"`; !strings.Contains(logs.String(), want) {
		t.Errorf("Expected the log to say %q, got %q", want, logs)
	}
	if got := relaysOf(cfg, "10.0.100.1"); got != "r1" {
		t.Errorf("Expected the old table after a failed reload, got %q", got)
	}
}

// Lookups running during reloads always see one whole table: each version of the file maps every
// prefix to the same relay, so a table that mixed two versions would show two relays.
func TestSourcesSwapUnderConcurrentLookups(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "s.txt")
	version := func(relay string, n int) string {
		var b strings.Builder
		for i := range n {
			b.WriteString("10." + strconv.Itoa(i/256) + "." + strconv.Itoa(i%256) + ".0/24 " + relay + "\n")
		}
		return b.String()
	}
	v1, v2 := version("r1", 500), version("r2", 501) // v2 is one prefix longer: sizes differ
	writeFile(t, path, v1)
	cfg, err := parseIn(t, dir, "amtrelay {\nrelay r1 192.0.2.1\nrelay r2 192.0.2.2\nsources s.txt reload 0\n}")
	if err != nil {
		t.Fatalf("Unexpected error: %v", err)
	}
	st := cfg.sources
	probes := []netip.Addr{
		netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.1.200.1"),
		netip.MustParseAddr("10.1.243.1"), // 500th prefix: in both versions
	}
	last := netip.MustParseAddr("10.1.244.1") // only in v2

	var (
		stop      atomic.Bool
		wg        sync.WaitGroup
		lookups   atomic.Int64
		mixedSeen atomic.Value
	)
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				runtime.Gosched() // leave the reloads some CPU on a small machine
				tab := st.current.Load()
				var first []int
				for _, a := range probes {
					ids, ok := tab.Lookup(a)
					if !ok || (first != nil && ids[0] != first[0]) {
						mixedSeen.Store("a table with a missing or mixed entry")
						return
					}
					first = ids
				}
				// The v2-only prefix exists exactly in the tables that map to r2 (index 1).
				if _, ok := tab.Lookup(last); ok != (first[0] == 1) {
					mixedSeen.Store("a table with v2's extra prefix and v1's relays, or the reverse")
					return
				}
				// And the lock-free path the query path takes.
				if _, ok := st.Lookup(probes[0]); !ok {
					mixedSeen.Store("a miss through sourceTable.Lookup")
					return
				}
				lookups.Add(1)
			}
		}()
	}
	ctx := context.Background()
	for i := range 10 {
		content := v1
		if i%2 == 0 {
			content = v2
		}
		writeFile(t, path, content)
		st.reload(ctx)
		if want := map[bool]string{true: "r2", false: "r1"}[i%2 == 0]; relaysOf(cfg, "10.0.0.1") != want {
			t.Fatalf("Reload %d: expected %s, got %s", i, want, relaysOf(cfg, "10.0.0.1"))
		}
	}
	stop.Store(true)
	wg.Wait()
	if m := mixedSeen.Load(); m != nil {
		t.Fatalf("A lookup saw %s", m)
	}
	if lookups.Load() == 0 {
		t.Errorf("Expected lookups to run during the reloads")
	}
}

func TestSourcesWatcher(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "s.txt")
	writeFile(t, path, "198.51.100.0/24 r1\n")
	cfg, err := parseIn(t, dir, "amtrelay {\nrelay r1 192.0.2.1\nrelay r2 192.0.2.2\nsources s.txt reload 20ms\n}")
	if err != nil {
		t.Fatalf("Unexpected error: %v", err)
	}
	st := cfg.sources
	st.startWatching()
	st.startWatching() // a second start is a no-op, not a second goroutine
	writeFile(t, path, "198.51.100.0/24 r2\n# v2\n")
	eventually(t, "the watcher to load v2", 5*time.Second, func() (bool, string) {
		got := relaysOf(cfg, "198.51.100.1")
		return got == "r2", got
	})
	st.stopWatching()
	st.stopWatching()

	// Stopped means stopped: a change is no longer picked up.
	writeFile(t, path, "198.51.100.0/24 r1\n# v3, longer\n")
	time.Sleep(100 * time.Millisecond)
	if got := relaysOf(cfg, "198.51.100.1"); got != "r2" {
		t.Errorf("Expected no reload after stop, got %q", got)
	}

	// reload 0: nothing to watch, and stop without a start is fine.
	once := &sourceTable{file: path}
	once.startWatching()
	once.stopWatching()
}

// The sources series shows the newest running instance's table, and goes with the last instance.
func TestSourcesCountSeries(t *testing.T) {
	key := sourcesKey{server: "dns://192.0.2.53:53", zone: "example.arpa."}
	tableOf := func(n int) *sourceTable {
		s := &sourceTable{}
		s.current.Store(tableWith(t, n))
		return s
	}
	value := func() float64 { return testutil.ToFloat64(sourcesCount.WithLabelValues(key.server, key.zone)) }
	series := func() int { return testutil.CollectAndCount(sourcesCount) }
	before := series()

	old, cur := tableOf(1), tableOf(2)
	exportSourcesCount(old, []sourcesKey{key})
	exportSourcesCount(cur, []sourcesKey{key})
	if v := value(); v != 2 {
		t.Errorf("Expected the newest instance's 2 prefixes, got %v", v)
	}
	// The old instance reloading during the overlap does not overwrite the value.
	old.current.Store(tableWith(t, 5))
	updateSourcesCount(old)
	if v := value(); v != 2 {
		t.Errorf("Expected the old instance's reload to leave the value, got %v", v)
	}
	unexportSourcesCount(cur)
	if v := value(); v != 5 {
		t.Errorf("Expected the remaining instance's 5 prefixes, got %v", v)
	}
	unexportSourcesCount(old)
	if n := series(); n != before {
		t.Errorf("Expected the series to go with the last instance: %d series, was %d", n, before)
	}
}

// tableWith builds a table of n /24 prefixes, all to relay 0.
func tableWith(t *testing.T, n int) *table.Table {
	t.Helper()
	b := table.NewBuilder()
	for i := range n {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24)
		if err := b.Add(p, []int{0}, table.Origin{}); err != nil {
			t.Fatal(err)
		}
	}
	tab, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	return tab
}
