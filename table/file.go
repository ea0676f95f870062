package table

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"
)

// MaxLineLen is the longest line a sources file may have, line end excluded.
// Real lines are a prefix and a few relay names; anything much longer is a
// corrupt or wrong file, and a bound keeps memory use predictable.
const MaxLineLen = 4096

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
	fp := fileParser{b: NewBuilder(), name: name, resolve: resolve}
	br := bufio.NewReaderSize(r, 64<<10)

	var (
		errs    []error
		dropped int
	)
	report := func(line int, err error) {
		if len(errs) < maxReported {
			errs = append(errs, &LineError{At: Origin{File: name, Line: line}, Err: err})
		} else {
			dropped++
		}
	}

	for lineNo := 1; ; lineNo++ {
		raw, tooLong, err := readLine(br)
		if err != nil && err != io.EOF {
			report(lineNo, fmt.Errorf("read: %w", err))
			break
		}
		if err == io.EOF && raw == "" && !tooLong {
			break
		}
		if lineNo == 1 {
			// Some Windows editors start UTF-8 files with a byte order mark.
			raw = strings.TrimPrefix(raw, "\uFEFF")
		}
		if tooLong {
			report(lineNo, fmt.Errorf("line longer than %d bytes", MaxLineLen))
		} else if perr := fp.line(raw, lineNo); perr != nil {
			report(lineNo, perr)
		}
		if err == io.EOF {
			break
		}
	}

	if len(errs) > 0 {
		if dropped > 0 {
			errs = append(errs, fmt.Errorf("%s: %d more errors not shown", name, dropped))
		}
		return nil, errors.Join(errs...)
	}
	return fp.b, nil
}

// fileParser keeps ParseFile's buffers between lines, so that a valid line
// costs no allocation beyond the line itself.
type fileParser struct {
	b       *Builder
	name    string
	resolve func(string) (int, bool)

	spans  []span
	relays []int

	// Generated files repeat the same relay list on most lines;
	// remembering the last one skips resolving and interning it again.
	lastRelays string
	lastSet    uint32
	haveLast   bool
}

func (fp *fileParser) line(raw string, lineNo int) error {
	sp, err := tokenize(raw, fp.spans[:0])
	fp.spans = sp
	if err != nil {
		return err
	}
	if len(sp) == 0 {
		return nil
	}
	pfx := raw[sp[0].start:sp[0].end]
	p, err := ParsePrefix(pfx)
	if err != nil {
		return fmt.Errorf("bad prefix %q: %w", pfx, err)
	}
	if len(sp) == 1 {
		return fmt.Errorf("no relays for %s", p)
	}

	names := raw[sp[1].start:sp[len(sp)-1].end]
	set := fp.lastSet
	if !fp.haveLast || names != fp.lastRelays {
		rs := fp.relays[:0]
		for _, s := range sp[1:] {
			n := raw[s.start:s.end]
			idx, ok := fp.resolve(n)
			if !ok {
				fp.relays = rs
				return fmt.Errorf("unknown relay %q", n)
			}
			rs = append(rs, idx)
		}
		fp.relays = rs
		set, err = fp.b.intern(rs)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		fp.lastRelays, fp.lastSet, fp.haveLast = names, set, true
	}
	return fp.b.put(p, set, Origin{File: fp.name, Line: lineNo}, false)
}

// readLine returns the next line without its "\n". A line longer than
// MaxLineLen is consumed to its end and reported with tooLong set, so the
// caller can go on with the next line.
func readLine(br *bufio.Reader) (line string, tooLong bool, err error) {
	var buf []byte
	n := 0
	for {
		chunk, err := br.ReadSlice('\n')
		n += len(chunk)
		if !tooLong {
			if n > MaxLineLen+2 { // room for "\r\n"
				tooLong = true
				buf = nil
			} else if buf == nil && err != bufio.ErrBufferFull {
				// The usual case: the whole line in one chunk.
				return string(chunk[:len(chunk)-trailingNL(chunk)]), false, err
			} else {
				buf = append(buf, chunk...)
			}
		}
		switch err {
		case bufio.ErrBufferFull:
			continue
		case nil, io.EOF:
			if tooLong {
				return "", true, err
			}
			return string(buf[:len(buf)-trailingNL(buf)]), false, err
		default:
			return "", tooLong, err
		}
	}
}

func trailingNL(b []byte) int {
	if len(b) > 0 && b[len(b)-1] == '\n' {
		return 1
	}
	return 0
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
