package amtrelay

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/amtdns/amtrelay/table"
)

// errEmptyFile rejects a sources file of zero bytes: that is what a file being rewritten in place
// looks like between its truncation and the first write, and loading it would drop every source.
var errEmptyFile = errors.New("empty file (being rewritten?); a file meant to have no sources needs a comment line")

// bigSourcesFile is the size from which the first load hands its garbage back to the system at once.
const bigSourcesFile = 8 << 20

// sourcesFile keeps an instance's connectivity table in step with its sources file: the file's
// entries with the inline `source` lines laid over them. A new version is parsed off the query path
// (only the lines that changed, when few did) and published whole, so a query sees the old table
// or the new one, never a mix, and never waits for a reload. A version that does not load leaves
// the table in service, and is reported once in the log (with FILE:LINE) and in
// table_reloads_total{result="error"}.
type sourcesFile struct {
	followedFile
	cfg     sourcesConfig
	loader  *table.FileLoader
	publish func(*table.Table)

	loadedAt atomic.Int64           // Unix nanoseconds when the table in service was built; read by metrics
	text     atomic.Pointer[string] // the version in service, for explanations
}

func newSourcesFile(cfg sourcesConfig, loader *table.FileLoader, publish func(*table.Table)) *sourcesFile {
	s := &sourcesFile{cfg: cfg, loader: loader, publish: publish}
	s.followedFile = followedFile{
		file:     table.NewSourceFile(cfg.path, cfg.maxSize),
		every:    cfg.reload,
		what:     "table",
		apply:    s.apply,
		reloaded: countTableReload,
	}
	return s
}

func countTableReload(ok bool) {
	result := "error"
	if ok {
		result = "success"
	}
	tableReloads.WithLabelValues(result).Inc()
}

// load reads the first version and publishes its table; an error names the Corefile line.
func (s *sourcesFile) load(ctx context.Context) error {
	if err := s.followedFile.load(ctx); err != nil {
		return lineErr(s.cfg.corefile, s.cfg.line, "sources: %s", oneLine(err))
	}
	return nil
}

// apply loads text, a new version, and publishes its table.
func (s *sourcesFile) apply(ctx context.Context, text string) (string, error) {
	if len(text) == 0 {
		return "", fmt.Errorf("%s: %w", s.cfg.path, errEmptyFile)
	}
	t, err := s.loader.Load(ctx, text)
	if err != nil {
		return "", err
	}
	first := s.text.Load() == nil
	s.text.Store(&text)
	s.loadedAt.Store(time.Now().UnixNano())
	s.publish(t)
	if first && len(text) >= bigSourcesFile {
		// The first load parses the whole file and leaves about twice its size in garbage. Left
		// to the runtime, the pages go back to the system over minutes, and RSS stays well above
		// what the table needs. Later reloads mostly patch; their garbage is left to the runtime,
		// which reuses it for the next reload rather than fault fresh pages in.
		debug.FreeOSMemory()
	}
	how := "whole file parsed"
	if n := s.loader.ChangedLines(); n >= 0 {
		how = fmt.Sprintf("%d changed lines applied", n)
	}
	return fmt.Sprintf("%d prefixes, %s", t.Len4()+t.Len6(), how), nil
}
