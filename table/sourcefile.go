package table

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"io/fs"
	"os"
	"slices"
	"time"
	"unsafe"

	"github.com/amtdns/amtrelay/internal/openfile"
)

// DefaultMaxSize is the size limit of a sources file when none is given:
// a routing-table-sized file (1.2M lines) is about 45 MB.
const DefaultMaxSize = 256 << 20

// SettleTime is how long a changed file must stay unchanged, in size and
// modification time, before it is read: a file rewritten in place is then
// read after its writer paused, not in the middle of a write.
const SettleTime = 100 * time.Millisecond

// settleByAge is how old a modification time must be for a file to count
// as settled at the first sight of it. It is well above SettleTime because
// some file systems keep times to the second (FAT to two seconds), so a
// time that looks 900 ms old may be a few ms old.
const settleByAge = SettleTime + 2*time.Second

// Errors of SourceFile, wrapped with the path and the detail.
var (
	// ErrNotRegular: the path is a FIFO, a device, a directory or a
	// socket. Only regular files are read: opening a FIFO would wait for
	// a writer, and a device such as /dev/zero never ends.
	ErrNotRegular = errors.New("not a regular file")
	// ErrTooLarge: the file is larger than the limit, or grew past it
	// while it was read.
	ErrTooLarge = errors.New("larger than max_size")
)

// FileStamp identifies a version of a sources file. Size and ModTime are
// cheap to get and catch almost every change; Sum settles the rest and
// keeps a touch or an identical rewrite from causing a reload.
type FileStamp struct {
	Size    int64
	ModTime time.Time
	Sum     uint64 // hash of the contents, if hashed
	hashed  bool
}

// sameStat reports whether s and o have the same size and modification time.
func (s FileStamp) sameStat(o FileStamp) bool {
	return s.Size == o.Size && s.ModTime.Equal(o.ModTime)
}

func stampOf(fi fs.FileInfo) FileStamp { return FileStamp{Size: fi.Size(), ModTime: fi.ModTime()} }

// contentSeed keys Sum. The hash is not a cryptographic one: it guards
// against reloading a file that did not change, not against an attacker,
// and a random key per process leaves no way to make two versions
// collide on purpose. It reads a 45 MB file an order of magnitude faster
// than SHA-256 (BenchmarkContentHash).
var contentSeed = maphash.MakeSeed()

func contentSum(text string) uint64 { return maphash.String(contentSeed, text) }

// SourceFile reads the versions of one sources file as somebody else
// publishes them, with the care a long-running server needs for a path it
// does not control:
//
//   - only regular files are read, and the check is made on the open
//     descriptor of a file opened without blocking, so a FIFO, a device or
//     a directory swapped in at the path is an error, never a hang;
//   - a file larger than the limit is refused before it is read, and a
//     read stops at the limit when the file grows meanwhile;
//   - a changed file is read once it has settled: its size and
//     modification time stayed the same across two checks SettleTime
//     apart (or its time is old), and again across the read itself;
//   - each version is returned once: an unchanged size and time costs a
//     stat, a touch or an identical rewrite costs a read and a hash.
//
// A SourceFile is not safe for concurrent use.
type SourceFile struct {
	path    string
	maxSize int64
	now     func() time.Time // time.Now, but for tests

	last      FileStamp // the version Next last returned
	pending   FileStamp // a changed version seen but not settled
	pendingAt time.Time // when pending was first seen
}

// NewSourceFile watches path; maxSize <= 0 means DefaultMaxSize.
func NewSourceFile(path string, maxSize int64) *SourceFile {
	if maxSize <= 0 {
		maxSize = DefaultMaxSize
	}
	return &SourceFile{path: path, maxSize: maxSize, now: time.Now}
}

// Path returns the path being watched.
func (f *SourceFile) Path() string { return f.path }

// Next checks the file once. It returns, with changed set, the whole text
// of a new settled version; or, with settleIn > 0, that the file changed
// and is not settled yet, to be checked again after settleIn; or neither,
// when nothing changed. An error says nothing changed: the next version
// is compared with the one returned last, so a file that disappears and
// comes back as it was is no change.
func (f *SourceFile) Next(ctx context.Context) (text string, changed bool, settleIn time.Duration, err error) {
	st, err := f.stat()
	if err != nil {
		f.pending = FileStamp{}
		return "", false, 0, err
	}
	if st.sameStat(f.last) {
		f.pending = FileStamp{}
		return "", false, 0, nil
	}
	if wait := f.settleWait(st); wait > 0 {
		return "", false, wait, nil
	}
	text, read, err := f.read(ctx)
	if err != nil {
		f.pending = FileStamp{}
		return "", false, 0, err
	}
	if !read.sameStat(st) {
		// Written between the stat and the end of the read: what was read
		// may be a mix of two versions.
		f.pending, f.pendingAt = read, f.now()
		return "", false, SettleTime, nil
	}
	f.pending = FileStamp{}
	prev := f.last
	f.last = read
	if prev.hashed && read.Sum == prev.Sum {
		return "", false, 0, nil
	}
	return text, true, 0, nil
}

// First waits up to limit for the file to settle and returns its text;
// it is Next for start-up, where there is no previous version to serve
// meanwhile.
func (f *SourceFile) First(ctx context.Context, limit time.Duration) (string, error) {
	deadline := f.now().Add(limit)
	for {
		text, changed, wait, err := f.Next(ctx)
		switch {
		case err != nil:
			return "", err
		case changed:
			return text, nil
		case wait == 0:
			return "", fmt.Errorf("%s: no new version", f.path) // only when First follows Next
		case f.now().Add(wait).After(deadline):
			return "", fmt.Errorf("%s: still being written after %v", f.path, limit)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return "", ctx.Err()
		case <-t.C:
		}
	}
}

// settleWait returns how long to wait before st may be read, 0 if now.
func (f *SourceFile) settleWait(st FileStamp) time.Duration {
	now := f.now()
	if now.Sub(st.ModTime) >= settleByAge {
		return 0
	}
	if !f.pending.sameStat(st) {
		f.pending, f.pendingAt = st, now
		return SettleTime
	}
	if waited := now.Sub(f.pendingAt); waited < SettleTime {
		return SettleTime - waited
	}
	return 0
}

// stat is the cheap check made at every interval. It follows symbolic
// links, as the read does, and refuses what the read would refuse.
func (f *SourceFile) stat() (FileStamp, error) {
	fi, err := os.Stat(f.path)
	if err != nil {
		return FileStamp{}, err
	}
	return stampOf(fi), f.checkInfo(fi)
}

func (f *SourceFile) checkInfo(fi fs.FileInfo) error {
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s: %w (%s)", f.path, ErrNotRegular, fileKind(fi.Mode()))
	}
	if fi.Size() > f.maxSize {
		return f.tooLarge(fi.Size())
	}
	return nil
}

func (f *SourceFile) tooLarge(size int64) error {
	return fmt.Errorf("%s: %w %d bytes (%d bytes)", f.path, ErrTooLarge, f.maxSize, size)
}

func fileKind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a FIFO"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeDevice != 0:
		return "a device"
	}
	return m.Type().String()
}

// read returns the contents of the file and their stamp, Sum included. The
// size and modification time are those of the descriptor after the read,
// so a write during the read shows as a stamp that differs from the one
// taken before. It stops with ctx's error when ctx ends, between reads of
// a few MiB.
func (f *SourceFile) read(ctx context.Context) (string, FileStamp, error) {
	file, err := openfile.Nonblocking(f.path)
	if err != nil {
		return "", FileStamp{}, err
	}
	defer file.Close()
	fi, err := file.Stat()
	if err != nil {
		return "", FileStamp{}, err
	}
	// The path may have been swapped since the stat: what counts is what
	// was opened.
	if err := f.checkInfo(fi); err != nil {
		return "", FileStamp{}, err
	}
	// One more byte than the size finds the end of a file that did not
	// grow in the one allocation.
	buf := make([]byte, 0, fi.Size()+1)
	for {
		if err := ctx.Err(); err != nil {
			return "", FileStamp{}, err
		}
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, readChunk)
		}
		n, err := file.Read(buf[len(buf):min(cap(buf), len(buf)+readChunk)])
		buf = buf[:len(buf)+n]
		if int64(len(buf)) > f.maxSize {
			return "", FileStamp{}, f.tooLarge(int64(len(buf)))
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", FileStamp{}, err
		}
	}
	if fi, err = file.Stat(); err != nil {
		return "", FileStamp{}, err
	}
	st := stampOf(fi)
	// The bytes become the string without a copy, as strings.Builder does:
	// nothing else refers to buf, so they can never change. A copy of a
	// big file would be most of the cost of a reload that changes little.
	text := unsafe.String(unsafe.SliceData(buf), len(buf))
	st.Sum, st.hashed = contentSum(text), true
	return text, st, nil
}

// readChunk is how much read reads between checks of its context.
const readChunk = 4 << 20
