package amtrelay

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"time"

	"github.com/amtdns/amtrelay/table"
)

// errEmptyFile rejects a sources file of zero bytes: that is what a file being rewritten in place
// looks like between its truncation and the first write, and loading it would drop every source.
var errEmptyFile = errors.New("empty file (being rewritten?); a file meant to have no sources needs a comment line")

// firstLoadSettle bounds how long start-up waits for a sources file that is being written.
const firstLoadSettle = 5 * time.Second

// bigSourcesFile is the size from which the first load hands its garbage back to the system at once.
const bigSourcesFile = 8 << 20

// sourcesFile keeps an instance's connectivity table in step with its sources file: the file's
// entries with the inline `source` lines laid over them. A new version is parsed off the query path
// (only the lines that changed, when few did) and published whole, so a query sees the old table
// or the new one, never a mix, and never waits for a reload. A version that does not load leaves
// the table in service and is reported once.
type sourcesFile struct {
	cfg     sourcesConfig
	file    *table.SourceFile
	loader  *table.FileLoader
	publish func(*table.Table)

	loadedAt atomic.Int64           // Unix nanoseconds when the table in service was built; read by metrics
	text     atomic.Pointer[string] // the version in service, for explanations

	// Written by the first load in setup, then only by the watch goroutine.
	prefixes  int    // in the table in service
	inService bool   // the version last read is the one in service, not one that was rejected
	lastErr   string // the failure last reported, so that a file that stays broken is reported once
}

func newSourcesFile(cfg sourcesConfig, loader *table.FileLoader, publish func(*table.Table)) *sourcesFile {
	return &sourcesFile{cfg: cfg, file: table.NewSourceFile(cfg.path, cfg.maxSize), loader: loader, publish: publish}
}

// load reads the first version of the file and publishes its table. An error here fails start-up,
// or the Corefile reload, before anything has started.
func (s *sourcesFile) load(ctx context.Context) error {
	text, err := s.file.First(ctx, firstLoadSettle)
	if err == nil {
		err = s.apply(ctx, text)
	}
	if err != nil {
		return lineErr(s.cfg.corefile, s.cfg.line, "sources: %s", oneLine(err))
	}
	if len(text) >= bigSourcesFile {
		// The first load parses the whole file and leaves about twice its size in garbage. Left
		// to the runtime, the pages go back to the system over minutes, and RSS stays well above
		// what the table needs. Later reloads mostly patch; their garbage is left to the runtime,
		// which reuses it for the next reload rather than fault fresh pages in.
		debug.FreeOSMemory()
	}
	return nil
}

// apply loads text, a new version, and publishes its table.
func (s *sourcesFile) apply(ctx context.Context, text string) error {
	s.inService = false
	if len(text) == 0 {
		return fmt.Errorf("%s: %w", s.cfg.path, errEmptyFile)
	}
	t, err := s.loader.Load(ctx, text)
	if err != nil {
		return err
	}
	s.inService = true
	s.text.Store(&text)
	s.prefixes = t.Len4() + t.Len6()
	s.loadedAt.Store(time.Now().UnixNano())
	s.publish(t)
	return nil
}

// watch checks the file every reload interval until ctx ends; a change that has not settled is
// checked again as soon as it may have.
func (s *sourcesFile) watch(ctx context.Context) {
	if s.cfg.reload == 0 {
		return
	}
	t := time.NewTimer(s.cfg.reload)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		next := s.cfg.reload
		if settleIn := s.check(ctx); settleIn > 0 {
			next = min(next, settleIn)
		}
		t.Reset(next)
	}
}

// check is one look at the file: a new settled version that loads replaces the table in service;
// one that does not leaves it in place and is reported once, in the log (with file and line) and in
// table_reloads_total{result="error"}. An unchanged file costs a stat. It returns how soon to look
// again when the file changed but has not settled.
func (s *sourcesFile) check(ctx context.Context) (settleIn time.Duration) {
	text, changed, settleIn, err := s.file.Next(ctx)
	if err == nil && changed {
		err = s.apply(ctx, text)
	}
	if ctx.Err() != nil {
		return 0 // stopping: a cut-off read says nothing about the file
	}
	switch {
	case err != nil:
		msg := oneLine(err)
		if msg != s.lastErr {
			s.lastErr = msg
			tableReloads.WithLabelValues("error").Inc()
			log.Errorf("Reload of %s failed, keeping the table loaded at %s: %s",
				s.cfg.path, time.Unix(0, s.loadedAt.Load()).Format(time.RFC3339), msg)
		}
	case changed:
		s.lastErr = ""
		tableReloads.WithLabelValues("success").Inc()
		how := "whole file parsed"
		if n := s.loader.ChangedLines(); n >= 0 {
			how = fmt.Sprintf("%d changed lines applied", n)
		}
		log.Infof("Reloaded %s: %d prefixes, %s", s.cfg.path, s.prefixes, how)
	case settleIn == 0 && s.inService:
		// Unchanged and readable: whatever went wrong (a missing file, say) is over.
		s.lastErr = ""
	}
	return settleIn
}

// oneLine joins the lines of a multi-error (one per bad line of a file) for a single log line.
func oneLine(err error) string { return strings.ReplaceAll(err.Error(), "\n", "; ") }
