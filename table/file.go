package table

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// maxLineLen is the longest line a sources file may have, line end excluded.
// Real lines are a prefix and a few relay names; anything much longer is a
// corrupt or wrong file, and a bound keeps memory use predictable.
const maxLineLen = 4096

// typicalLineLen is about the length of a line with a prefix and a relay
// or two, for estimating a file's lines from its size.
const typicalLineLen = 32

// ctxCheckLines is how often ParseFile checks its context, in lines: a few
// milliseconds of parsing.
const ctxCheckLines = 1 << 14

// maxReported caps the errors ParseFile collects: enough to fix a batch of
// mistakes per round, few enough to fit in a log line.
const maxReported = 10

// maxQuoted caps the bytes of a field that a message quotes. A field can be
// as long as a line; quoted whole, with escapes for binary garbage, ten of
// them made a message of hundreds of KB, in the log at every reload. The
// start of a field is enough to recognize it.
const maxQuoted = 80

// LineError is an error at one place in a sources file. Its message is
// "FILE:LINE: reason".
type LineError struct {
	At  Origin
	Err error
}

func (e *LineError) Error() string { return e.At.String() + ": " + e.Err.Error() }
func (e *LineError) Unwrap() error { return e.Err }

// ParseFile parses text, the contents of a sources file: one
// "PREFIX RELAY..." entry per line, fields separated by spaces or tabs, "#"
// starting a comment, blank lines ignored, CRLF line ends accepted, lines
// of at most 4096 bytes. name is only used in messages and origins; resolve
// maps a relay name to its index. When ctx ends, the parse stops with ctx's
// error.
//
// Every line is checked, also after the first error, and the result is all
// or nothing: on success the Builder holds the whole file, on failure the
// Builder is nil and the error lists the first few problems, each a
// *LineError ("sources.txt:12: unknown relay \"r9\""), joined by newlines,
// and how many more there are. A message quotes at most the first 80 bytes
// of a field, so that a file of garbage still makes a short one.
//
// A last line without a newline is parsed like any other, so a file caught
// in the middle of being written usually fails (a cut prefix no longer
// parses) rather than loading short. That is not guaranteed: a line cut
// after a complete relay name is still valid. Writers should replace the
// file by rename.
func ParseFile(ctx context.Context, text, name string, resolve func(relay string) (int, bool)) (*Builder, error) {
	fp := newFileParser(name, resolve)
	// Size the entry list once rather than copy it over and over as a
	// million lines arrive.
	fp.b.entries = make([]entry, 0, min(len(text)/typicalLineLen, 1<<22))

	var (
		errs    []*LineError // in line order
		dropped int
	)
	for off, lineNo := 0, 1; off < len(text); lineNo++ {
		if lineNo%ctxCheckLines == 0 && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		var ln fileLine
		ln, off = lineAt(text, off)
		perr := fp.line(ln.text(), lineNo)
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
	return nil, joinLineErrors(errs, dropped, name)
}

// joinLineErrors makes one error of the first maxReported errs, in line
// order, and says how many more there are.
func joinLineErrors(errs []*LineError, dropped int, name string) error {
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
	return errors.Join(joined...)
}

// ReadFields reads text in the line format of a sources file (fields
// separated by spaces or tabs, "#" starting a comment, blank lines
// ignored, CRLF accepted, no control characters, lines of at most 4096
// bytes) for a file of another kind: it calls fn with the fields of each
// line that has any, in order. Problems of the format and errors fn returns
// are reported as ParseFile reports its own: the first ten, each a
// *LineError naming name and the line, and how many more there are.
func ReadFields(text, name string, fn func(fields []string) error) error {
	var (
		errs    []*LineError
		dropped int
		spans   []span
		fields  []string
	)
	for off, lineNo := 0, 1; off < len(text); lineNo++ {
		var ln fileLine
		ln, off = lineAt(text, off)
		line := ln.text()
		var err error
		if spans, err = tokenize(line, spans[:0]); err == nil && len(spans) > 0 {
			fields = fields[:0]
			for _, sp := range spans {
				fields = append(fields, line[sp.start:sp.end])
			}
			err = fn(fields)
		}
		if err == nil {
			continue
		}
		if len(errs) < maxReported {
			errs = append(errs, &LineError{At: Origin{File: name, Line: lineNo}, Err: err})
		} else {
			dropped++
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return joinLineErrors(errs, dropped, name)
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

// prefix splits a line into fp.spans and returns its prefix, or ok false
// for a blank or comment line.
func (fp *fileParser) prefix(raw string) (p netip.Prefix, ok bool, err error) {
	sp, err := tokenize(raw, fp.spans[:0])
	fp.spans = sp
	if err != nil || len(sp) == 0 {
		return p, false, err
	}
	pfx := raw[sp[0].start:sp[0].end]
	if p, err = ParsePrefix(pfx); err != nil {
		return p, false, fmt.Errorf("bad prefix %s: %w", Quote(pfx), err)
	}
	return p, true, nil
}

// parse returns the prefix of a line and the number of its relay set in
// fp.b, or ok false for a blank or comment line.
func (fp *fileParser) parse(raw string) (p netip.Prefix, set uint32, ok bool, err error) {
	if p, ok, err = fp.prefix(raw); err != nil || !ok {
		return p, 0, false, err
	}
	sp := fp.spans
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
				return p, 0, false, fmt.Errorf("unknown relay %s", Quote(n))
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

// Quote quotes a field of a file for a message, as %q does, or, when it
// is longer than maxQuoted, its start and its whole length:
// "10.0.0.0/8xxx"... (4096 bytes).
func Quote(s string) string {
	if len(s) <= maxQuoted {
		return strconv.Quote(s)
	}
	cut := maxQuoted
	// Not inside a UTF-8 sequence, which the quote would show as escapes.
	for cut > maxQuoted-utf8.UTFMax && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%q... (%d bytes)", s[:cut], len(s))
}

// span is a field of a line, as byte offsets, so that the caller can also
// take the text between fields.
type span struct{ start, end int }

// tokenize appends the fields of line, the prefix first, to spans. A
// blank or comment-only line has none. A trailing "\r" or "\r\n" is
// ignored; NUL bytes anywhere, other control characters outside the
// comment, and lines longer than maxLineLen are errors.
func tokenize(line string, spans []span) ([]span, error) {
	line = strings.TrimSuffix(line, "\n")
	line = strings.TrimSuffix(line, "\r")
	if len(line) > maxLineLen {
		return spans, fmt.Errorf("line longer than %d bytes", maxLineLen)
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

// fileLine is a line of a file's text, without its "\n".
type fileLine struct {
	s     string // the whole text
	start int
	end   int
}

func (l fileLine) String() string { return l.s[l.start:l.end] }

// byteOrderMark is what some Windows editors write at the start of a file.
const byteOrderMark = "\uFEFF"

// text returns the line as ParseFile sees it: a byte order mark at the
// start of the file is not part of it.
func (l fileLine) text() string {
	if l.start == 0 {
		return strings.TrimPrefix(l.String(), byteOrderMark)
	}
	return l.String()
}

// lineAt returns the line of s starting at off, and the start of the
// next one.
func lineAt(s string, off int) (fileLine, int) {
	end := strings.IndexByte(s[off:], '\n')
	if end < 0 {
		return fileLine{s, off, len(s)}, len(s)
	}
	return fileLine{s, off, off + end}, off + end + 1
}

// countLines returns the number of lines of s from off, a last one
// without "\n" included.
func countLines(s string, off int) int {
	n := strings.Count(s[off:], "\n")
	if len(s) > off && s[len(s)-1] != '\n' {
		n++
	}
	return n
}

// FindPrefix returns the number of the line of text, a sources file's
// contents, that holds prefix p (in any spelling ParsePrefix takes for it),
// for messages that say where an entry came from. It reads the whole text:
// about 0.1 s for a million lines.
func FindPrefix(text string, p netip.Prefix) (line int, ok bool) {
	p, err := normalize(p)
	if err != nil {
		return 0, false
	}
	var spans []span
	for off, lineNo := 0, 1; off < len(text); lineNo++ {
		var ln fileLine
		ln, off = lineAt(text, off)
		s := ln.text()
		if spans, err = tokenize(s, spans[:0]); err != nil || len(spans) == 0 {
			continue
		}
		if q, err := ParsePrefix(s[spans[0].start:spans[0].end]); err == nil && q == p {
			return lineNo, true
		}
	}
	return 0, false
}
