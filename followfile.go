package amtrelay

import (
	"context"
	"strings"
	"time"

	"github.com/amtdns/amtrelay/table"
)

// firstLoadSettle bounds how long start-up waits for a file that is being written.
const firstLoadSettle = 5 * time.Second

// followedFile is a file an instance loads at setup and follows while it runs: read safely
// (table.SourceFile: regular files only, a size limit, settled versions), each new version applied
// whole or not at all, and a version that fails reported once while the last good one stays.
type followedFile struct {
	file  *table.SourceFile
	every time.Duration // how often to look; 0 reads the file once
	what  string        // what the file holds, for the log: "table", "admin states"
	// apply loads a new version, or fails and leaves everything as it was. On success it returns
	// what the log says of the new version.
	apply func(ctx context.Context, text string) (summary string, err error)
	// reloaded, if set, is told of each reload after the first that succeeded or failed (a failure
	// that repeats the last one is not told again).
	reloaded func(ok bool)

	// Written by the first load in setup, then only by the watch goroutine.
	inService bool      // the version last read is the one in service, not one that was rejected
	lastErr   string    // the failure last reported, so that a file that stays broken is reported once
	loadedAt  time.Time // when the version in service was applied
}

// load reads and applies the first version. An error here fails start-up, or the Corefile reload,
// before anything has started.
func (f *followedFile) load(ctx context.Context) error {
	text, err := f.file.First(ctx, firstLoadSettle)
	if err == nil {
		err = f.use(ctx, text)
	}
	return err
}

// use applies a new version; a reload that says something about it is logged.
func (f *followedFile) use(ctx context.Context, text string) error {
	f.inService = false
	summary, err := f.apply(ctx, text)
	if err != nil {
		return err
	}
	reload := !f.loadedAt.IsZero()
	f.inService, f.loadedAt = true, time.Now()
	if reload && summary != "" {
		log.Infof("Reloaded %s: %s", f.file.Path(), summary)
	}
	return nil
}

// watch looks at the file every interval until ctx ends; a change that has not settled is looked
// at again as soon as it may have.
func (f *followedFile) watch(ctx context.Context) {
	if f.every == 0 {
		return
	}
	t := time.NewTimer(f.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		next := f.every
		if settleIn := f.check(ctx); settleIn > 0 {
			next = min(next, settleIn)
		}
		t.Reset(next)
	}
}

// check is one look at the file: a new settled version that applies replaces the one in service;
// one that does not leaves it in place and is reported once. An unchanged file costs a stat. It
// returns how soon to look again when the file changed but has not settled.
func (f *followedFile) check(ctx context.Context) (settleIn time.Duration) {
	text, changed, settleIn, err := f.file.Next(ctx)
	if err == nil && changed {
		err = f.use(ctx, text)
	}
	if ctx.Err() != nil {
		return 0 // stopping: a cut-off read says nothing about the file
	}
	switch {
	case err != nil:
		msg := oneLine(err)
		if msg == f.lastErr {
			break
		}
		f.lastErr = msg
		if f.reloaded != nil {
			f.reloaded(false)
		}
		log.Errorf("Reload of %s failed, keeping the %s loaded at %s: %s",
			f.file.Path(), f.what, f.loadedAt.Format(time.RFC3339), msg)
	case changed:
		f.lastErr = ""
		if f.reloaded != nil {
			f.reloaded(true)
		}
	case settleIn == 0 && f.inService:
		// Unchanged and readable: whatever went wrong (a missing file, say) is over.
		f.lastErr = ""
	}
	return settleIn
}

// oneLine joins the lines of a multi-error (one per bad line of a file) for a single log line.
func oneLine(err error) string { return strings.ReplaceAll(err.Error(), "\n", "; ") }
