package amtrelay

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/amtdns/amtrelay/table"
)

// Default interval of the sources property's reload option.
const defaultSourcesReload = 5 * time.Second

// sourceTable is the per-source connectivity table one plugin instance serves from: the inline
// `source` lines, laid over the entries of a sources file when one is configured. Queries read the
// current table with one atomic load and no lock. A reload builds a new table off the query path
// (from the lines that changed, when few did) and publishes it with one atomic store, so a query
// sees the old table or the new one, never a mix, and never waits for a reload.
type sourceTable struct {
	current atomic.Pointer[table.Table]

	file     string            // sources file, "" when the table is the inline lines only
	interval time.Duration     // how often the file is checked for changes; 0 reads it once
	loader   *table.FileLoader // turns versions of file into tables, inline lines laid over

	// Loader state: written by the first load in setup, then only by the watch goroutine.
	stamp       table.FileStamp // the version of the file last read, loaded or rejected
	stampLoaded bool            // stamp is the version in service, not one that was rejected
	loadedAt    time.Time       // when the current table was built
	lastErr     string          // the failure last reported, so that a file that stays broken is reported once

	mu      sync.Mutex // guards cancel and started against a stop racing a start
	cancel  context.CancelFunc
	started bool
	wg      sync.WaitGroup
}

// Lookup returns the relays of the longest prefix that contains addr, from the current table.
func (s *sourceTable) Lookup(addr netip.Addr) (relays []int, ok bool) {
	return s.current.Load().Lookup(addr)
}

// Len returns the number of prefixes in the current table.
func (s *sourceTable) Len() int {
	t := s.current.Load()
	return t.Len4() + t.Len6()
}

// errEmptyFile rejects a sources file of zero bytes: that is what a file being rewritten in place
// looks like between its truncation and the first write, and loading it would drop every source.
var errEmptyFile = errors.New("empty file (being rewritten?); a file meant to have no sources needs a comment line")

// load reads the sources file if it differs from the version read last time and builds the table
// it describes, inline lines on top. It returns a nil table and no error when the file has not
// changed. Every new line is checked before anything is built: the result is a whole table or an
// error naming FILE:LINE for each bad line (table.ParseFile reports the first few).
func (s *sourceTable) load(ctx context.Context) (*table.Table, error) {
	text, stamp, changed, err := table.Check(ctx, s.file, s.stamp)
	if err != nil {
		// s.stamp stays: a file that comes back unchanged is no change.
		return nil, err
	}
	s.stamp = stamp
	if !changed {
		return nil, nil
	}
	s.stampLoaded = false
	if len(text) == 0 {
		return nil, fmt.Errorf("%s: %w", s.file, errEmptyFile)
	}
	first := s.current.Load() == nil
	t, err := s.loader.Load(ctx, text)
	if err != nil {
		return nil, err
	}
	s.stampLoaded = true
	if first && len(text) >= bigSourcesFile {
		// The first load parses the whole file and leaves about twice its size in garbage. Left
		// to the runtime, the pages go back to the system over minutes, and RSS stays well above
		// what the table needs. Later reloads mostly patch; their garbage is left to the runtime,
		// which reuses it for the next reload rather than fault fresh pages in.
		debug.FreeOSMemory()
	}
	return t, nil
}

// bigSourcesFile is the size from which the first load hands its garbage back to the system at once.
const bigSourcesFile = 8 << 20

// reload is one check of the sources file: a changed file that parses replaces the table in
// service; one that does not leaves it in place and is reported once, in the log (with file and
// line) and in table_reloads_total{result="error"}. An unchanged file costs a stat.
func (s *sourceTable) reload(ctx context.Context) {
	t, err := s.load(ctx)
	if ctx.Err() != nil {
		return // stopping: a cut-off read says nothing about the file
	}
	if err != nil {
		msg := strings.ReplaceAll(err.Error(), "\n", "; ")
		if msg == s.lastErr {
			return
		}
		s.lastErr = msg
		tableReloads.WithLabelValues("error").Inc()
		log.Errorf("Reload of %s failed, keeping the table loaded at %s: %s",
			s.file, s.loadedAt.Format(time.RFC3339), msg)
		return
	}
	if t == nil {
		if s.stampLoaded {
			// Unchanged and readable: whatever went wrong (a missing file, say) is over.
			s.lastErr = ""
		}
		return
	}
	s.current.Store(t)
	s.loadedAt = time.Now()
	s.lastErr = ""
	tableReloads.WithLabelValues("success").Inc()
	tableLastReload.Set(float64(s.loadedAt.UnixNano()) / 1e9)
	updateSourcesCount(s)
	if n := s.loader.ChangedLines(); n >= 0 {
		log.Infof("Reloaded %s: %d prefixes, %d changed lines applied", s.file, s.Len(), n)
	} else {
		log.Infof("Reloaded %s: %d prefixes, whole file parsed", s.file, s.Len())
	}
}

// startWatching starts checking the sources file every interval, if there is one to watch.
func (s *sourceTable) startWatching() {
	if s.file == "" || s.interval == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return
	}
	s.started = true
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.wg.Add(1)
	go s.watch(ctx)
}

// stopWatching ends the watch goroutine and waits for it; safe to call more than once.
func (s *sourceTable) stopWatching() {
	s.mu.Lock()
	cancel := s.cancel
	s.cancel = nil
	s.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	s.wg.Wait()
}

func (s *sourceTable) watch(ctx context.Context) {
	defer s.wg.Done()
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.reload(ctx)
	}
}
