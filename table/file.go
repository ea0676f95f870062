package table

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"slices"
	"strings"
)

// MaxLineLen is the longest line a sources file may have, line end excluded.
// Real lines are a prefix and a few relay names; anything much longer is a
// corrupt or wrong file, and a bound keeps memory use predictable.
const MaxLineLen = 4096

// typicalLineLen is about the length of a line with a prefix and a relay
// or two, for estimating a file's lines from its size.
const typicalLineLen = 32

// maxReported caps the errors ParseFile collects: enough to fix a batch of
// mistakes per round, few enough to fit in a log line.
const maxReported = 10

// LineError is an error at one place in a sources file. Its message is
// "FILE:LINE: reason".
type LineError struct {
	At  Origin
	Err error
}

func (e *LineError) Error() string { return e.At.String() + ": " + e.Err.Error() }
func (e *LineError) Unwrap() error { return e.Err }

// ParseFile reads a sources file: one "PREFIX RELAY..." entry per line,
// fields separated by spaces or tabs, "#" starting a comment, blank lines
// ignored, CRLF line ends accepted. name is only used in messages and
// origins; resolve maps a relay name to its index.
//
// Every line is checked, also after the first error, and the result is all
// or nothing: on success the Builder holds the whole file, on failure the
// Builder is nil and the error lists the first few problems, each a
// *LineError ("sources.txt:12: unknown relay \"r9\""), joined by newlines.
//
// A last line without a newline is parsed like any other, so a file caught
// in the middle of being written usually fails (a cut prefix no longer
// parses) rather than loading short. That is not guaranteed: a line cut
// after a complete relay name is still valid. Writers should replace the
// file by rename.
func ParseFile(r io.Reader, name string, resolve func(relay string) (int, bool)) (*Builder, error) {
	fp := newFileParser(name, resolve)
	if size := sizeOf(r); size > 0 {
		// Knowing the size of the file, size the entry list once rather
		// than copy it over and over as a million lines arrive.
		fp.b.entries = make([]entry, 0, min(size/typicalLineLen, 1<<22))
	}
	lr := lineReader{r: r}

	var (
		errs    []*LineError // in line order
		dropped int
	)
	for lineNo := 1; ; lineNo++ {
		raw, tooLong, err := lr.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			errs = append(errs, &LineError{At: Origin{File: name, Line: lineNo}, Err: fmt.Errorf("read: %w", err)})
			break
		}
		if lineNo == 1 {
			// Some Windows editors start UTF-8 files with a byte order mark.
			raw = strings.TrimPrefix(raw, "\uFEFF")
		}
		var perr error
		if tooLong {
			perr = fmt.Errorf("line longer than %d bytes", MaxLineLen)
		} else {
			perr = fp.line(raw, lineNo)
		}
		if perr == nil {
			continue
		}
		if len(errs) < maxReported {
			errs = append(errs, &LineError{At: Origin{File: name, Line: lineNo}, Err: perr})
		} else {
			dropped++
		}
	}

	// Duplicates show only once the whole file is sorted; they join the
	// other errors in line order.
	dups, total := fp.b.duplicates(maxReported)
	dropped += total - len(dups)
	for _, d := range dups {
		errs = append(errs, &LineError{At: d.Dup, Err: d})
	}
	if len(errs) == 0 {
		return fp.b, nil
	}
	slices.SortStableFunc(errs, func(a, b *LineError) int { return a.At.Line - b.At.Line })
	if len(errs) > maxReported {
		dropped += len(errs) - maxReported
		errs = errs[:maxReported]
	}
	joined := make([]error, 0, len(errs)+1)
	for _, e := range errs {
		joined = append(joined, e)
	}
	if dropped > 0 {
		joined = append(joined, fmt.Errorf("%s: %d more errors not shown", name, dropped))
	}
	return nil, errors.Join(joined...)
}

// sizeOf returns the size of what r reads, if r says (an *os.File, a
// bytes.Reader), or 0.
func sizeOf(r io.Reader) int64 {
	switch r := r.(type) {
	case interface{ Size() int64 }:
		return r.Size()
	case interface{ Stat() (fs.FileInfo, error) }:
		if fi, err := r.Stat(); err == nil && fi.Mode().IsRegular() {
			return fi.Size()
		}
	}
	return 0
}

// fileParser keeps ParseFile's buffers between lines, so that a valid line
// costs no allocation beyond the line itself.
type fileParser struct {
	b       *Builder
	name    string
	resolve func(string) (int, bool)

	spans  []span
	relays []int

	// Files repeat a few relay lists on a million lines; remembering the
	// set of each list text skips resolving and interning it again.
	setOf map[string]uint32
}

func newFileParser(name string, resolve func(string) (int, bool)) *fileParser {
	return &fileParser{b: NewBuilder(), name: name, resolve: resolve, setOf: make(map[string]uint32)}
}

// maxCachedLists bounds setOf, for files where every line has a list of
// its own.
const maxCachedLists = 4096

func (fp *fileParser) line(raw string, lineNo int) error {
	p, set, ok, err := fp.parse(raw)
	if err != nil || !ok {
		return err
	}
	return fp.b.put(p, set, Origin{File: fp.name, Line: lineNo}, false)
}

// parse returns the prefix of a line and the number of its relay set in
// fp.b, or ok false for a blank or comment line.
func (fp *fileParser) parse(raw string) (p netip.Prefix, set uint32, ok bool, err error) {
	sp, err := tokenize(raw, fp.spans[:0])
	fp.spans = sp
	if err != nil || len(sp) == 0 {
		return p, 0, false, err
	}
	pfx := raw[sp[0].start:sp[0].end]
	if p, err = ParsePrefix(pfx); err != nil {
		return p, 0, false, fmt.Errorf("bad prefix %q: %w", pfx, err)
	}
	if len(sp) == 1 {
		return p, 0, false, fmt.Errorf("no relays for %s", p)
	}

	names := raw[sp[1].start:sp[len(sp)-1].end]
	set, cached := fp.setOf[names]
	if !cached {
		rs := fp.relays[:0]
		for _, s := range sp[1:] {
			n := raw[s.start:s.end]
			idx, known := fp.resolve(n)
			if !known {
				fp.relays = rs
				return p, 0, false, fmt.Errorf("unknown relay %q", n)
			}
			rs = append(rs, idx)
		}
		fp.relays = rs
		if set, err = fp.b.intern(rs); err != nil {
			return p, 0, false, fmt.Errorf("%s: %w", p, err)
		}
		if len(fp.setOf) < maxCachedLists {
			fp.setOf[strings.Clone(names)] = set
		}
	}
	return p, set, true, nil
}

// lineReader splits a file into lines. It converts the file to strings a
// block at a time, and lines are substrings of their block: a million-line
// file costs a few hundred allocations instead of a million.
type lineReader struct {
	r     io.Reader
	block string // whole lines not yet returned, each ending in "\n"
	buf   []byte // bytes read after the last "\n"
	err   error  // from r, once block and buf are used up
	long  bool   // an over-long line follows the lines of block
	skip  bool   // the head of buf is the rest of that line
}

// readSize is what lineReader reads at a time. Its blocks stay well below
// 32 KiB, the size past which Go allocates each object on fresh pages of
// its own, and above MaxLineLen, so that a line fits in one.
const readSize = 8 << 10

// next returns the next line without its "\n", or io.EOF after the last
// one. A line longer than MaxLineLen (a "\r" before the "\n" aside) is
// reported with tooLong set and its text left out, and the next call goes on
// with the line after it.
func (lr *lineReader) next() (line string, tooLong bool, err error) {
	for {
		if i := strings.IndexByte(lr.block, '\n'); i >= 0 {
			line, lr.block = lr.block[:i], lr.block[i+1:]
			if len(line) > MaxLineLen+1 {
				return "", true, nil
			}
			return line, false, nil
		}
		if lr.long {
			lr.long = false
			return "", true, nil
		}
		if lr.err != nil {
			if lr.skip || len(lr.buf) == 0 {
				return "", false, lr.err
			}
			// The last line, without a "\n".
			line, lr.buf = string(lr.buf), nil
			if lr.err != io.EOF {
				// Cut short by the error: not a line to parse.
				return "", false, lr.err
			}
			if len(line) > MaxLineLen+1 {
				return "", true, nil
			}
			return line, false, nil
		}
		lr.fill()
	}
}

// fill reads once, and moves the whole lines in buf to block.
func (lr *lineReader) fill() {
	if cap(lr.buf)-len(lr.buf) < readSize/2 {
		lr.buf = slices.Grow(lr.buf, readSize)
	}
	n, err := lr.r.Read(lr.buf[len(lr.buf):cap(lr.buf)])
	read := lr.buf[len(lr.buf) : len(lr.buf)+n]
	lr.buf = lr.buf[:len(lr.buf)+n]
	if err != nil {
		lr.err = err
	}
	if lr.skip {
		i := bytes.IndexByte(read, '\n')
		if i < 0 {
			lr.buf = lr.buf[:0]
			return
		}
		lr.buf = lr.buf[:copy(lr.buf, read[i+1:])]
		lr.skip = false
	}
	if last := bytes.LastIndexByte(lr.buf, '\n'); last >= 0 {
		lr.block = string(lr.buf[:last+1])
		lr.buf = lr.buf[:copy(lr.buf, lr.buf[last+1:])]
	}
	if len(lr.buf) > MaxLineLen+1 && lr.err == nil {
		// An over-long line with no end in sight: report it after the
		// lines of block, and drop the rest of it as it comes.
		lr.buf = lr.buf[:0]
		lr.long, lr.skip = true, true
	}
}

// ParseLine splits one line of a sources file into the prefix and relay
// name fields, without checking what they say. A blank or comment-only line
// returns an empty prefix and no error. A trailing "\r" or "\r\n" is
// ignored; NUL bytes anywhere, other control characters outside the
// comment, and lines longer than MaxLineLen are errors.
func ParseLine(line string) (prefix string, relays []string, err error) {
	sp, err := tokenize(line, nil)
	if err != nil || len(sp) == 0 {
		return "", nil, err
	}
	for _, s := range sp[1:] {
		relays = append(relays, line[s.start:s.end])
	}
	return line[sp[0].start:sp[0].end], relays, nil
}

// span is a field of a line, as byte offsets, so that the caller can also
// take the text between fields.
type span struct{ start, end int }

// tokenize appends the fields of line to spans.
func tokenize(line string, spans []span) ([]span, error) {
	line = strings.TrimSuffix(line, "\n")
	line = strings.TrimSuffix(line, "\r")
	if len(line) > MaxLineLen {
		return spans, fmt.Errorf("line longer than %d bytes", MaxLineLen)
	}
	// A NUL usually means a file that was preallocated or cut short by a
	// crash; refuse it even inside a comment.
	if i := strings.IndexByte(line, 0); i >= 0 {
		return spans, fmt.Errorf("NUL byte at column %d", i+1)
	}
	if i := strings.IndexByte(line, '#'); i >= 0 {
		line = line[:i]
	}
	start := -1
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == ' ' || c == '\t':
			if start >= 0 {
				spans = append(spans, span{start, i})
				start = -1
			}
		case c < ' ' || c == 0x7f:
			return spans, fmt.Errorf("control character %#02x at column %d", c, i+1)
		default:
			if start < 0 {
				start = i
			}
		}
	}
	if start >= 0 {
		spans = append(spans, span{start, len(line)})
	}
	return spans, nil
}
