package table

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
)

var testRelays = map[string]int{"r1": 1, "r2": 2, "r3": 3}

// bg is the context of parses that run to their end.
var bg = context.Background()

func resolveTest(name string) (int, bool) {
	i, ok := testRelays[name]
	return i, ok
}

func TestParseFile(t *testing.T) {
	const file = "# sources for the lab\n" +
		"\n" +
		"198.51.100.0/24 r1 r2   # two relays\n" +
		"\t203.0.113.0/24\tr3\r\n" +
		"203.0.113.128/25 r2 r1 r2\n" +
		"2001:db8::/32 r1\n" +
		"   # indented comment\n" +
		"192.0.2.1 r3\n" +
		"::ffff:192.0.2.0/120 r2#comment right after a field\n" +
		"2001:db8:1::1 r2 r3"
	b, err := ParseFile(bg, file, "sources.txt", resolveTest)
	if err != nil {
		t.Fatalf("ParseFile: %v", err)
	}
	tab := build(t, b)
	tests := []struct {
		addr string
		want []int
	}{
		{"198.51.100.1", []int{1, 2}},
		{"203.0.113.1", []int{3}},
		{"203.0.113.200", []int{1, 2}},
		{"2001:db8::5", []int{1}},
		{"192.0.2.1", []int{3}},
		{"192.0.2.2", []int{2}},
		{"2001:db8:1::1", []int{2, 3}},
	}
	for _, tc := range tests {
		if got, ok := tab.Lookup(netip.MustParseAddr(tc.addr)); !ok || !slices.Equal(got, tc.want) {
			t.Errorf("Lookup(%s) = %v, %v; want %v", tc.addr, got, ok, tc.want)
		}
	}
	if tab.Len4() != 5 || tab.Len6() != 2 || liveSets(tab) != 5 {
		t.Errorf("Len4 %d, Len6 %d, liveSets %d; want 5, 2, 5", tab.Len4(), tab.Len6(), liveSets(tab))
	}
}

func TestParseFileOrigins(t *testing.T) {
	b, err := ParseFile(bg, "# x\n10.0.0.0/8 r1\n", "a.txt", resolveTest)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Add(netip.MustParsePrefix("10.0.0.0/8"), []int{2}, Origin{File: "Corefile", Line: 4}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Build(); err == nil || err.Error() != "10.0.0.0/8: duplicate, first at a.txt:2" {
		t.Errorf("Duplicate of a file entry: %v", err)
	}
}

func TestParseFileEmpty(t *testing.T) {
	for _, in := range []string{"", "\n", "# only a comment", "\r\n\r\n", "\uFEFF"} {
		b, err := ParseFile(bg, in, "empty.txt", resolveTest)
		if err != nil || b.len() != 0 {
			t.Errorf("ParseFile(%q) = %v entries, %v; want an empty builder", in, b.len(), err)
		}
	}
}

func TestParseFileBOM(t *testing.T) {
	b, err := ParseFile(bg, "\uFEFF10.0.0.0/8 r1\n", "bom.txt", resolveTest)
	if err != nil || b.len() != 1 {
		t.Fatalf("File with byte order mark: %v", err)
	}
	// Only at the very start; elsewhere it is just a bad prefix.
	_, err = ParseFile(bg, "10.0.0.0/8 r1\n\uFEFF11.0.0.0/8 r1\n", "bom.txt", resolveTest)
	if err == nil || !strings.HasPrefix(err.Error(), "bom.txt:2: bad prefix") {
		t.Errorf("Byte order mark on line 2: %v", err)
	}
}

func TestParseFileErrors(t *testing.T) {
	long := "10.0.0.0/8 r1 " + strings.Repeat("#", maxLineLen)
	tests := []struct {
		name string
		in   string
		want string // the whole error message
	}{
		{"unknown relay", "10.0.0.0/8 r1\n10.1.0.0/16 r1 r9\n", `src.txt:2: unknown relay "r9"`},
		{"bad prefix", "10.0.0.0/33 r1\n", `src.txt:1: bad prefix "10.0.0.0/33": prefix length out of range`},
		{"host bits", "\n\n203.0.113.7/24 r1\n", `src.txt:3: bad prefix "203.0.113.7/24": 203.0.113.7/24 has host bits set; did you mean 203.0.113.0/24?`},
		{"zone", "fe80::1%eth0 r1\n", `src.txt:1: bad prefix "fe80::1%eth0": fe80::1%eth0: zones are not allowed`},
		{"relay as prefix", "r1 10.0.0.0/8\n", `src.txt:1: bad prefix "r1": unable to parse IP`},
		{"duplicate", "# c\n203.0.113.0/24 r1\n\n203.0.113.0/24 r2\n", "src.txt:4: 203.0.113.0/24: duplicate, first at line 2"},
		{"duplicate mapped", "203.0.113.0/24 r1\n::ffff:203.0.113.0/120 r2\n", "src.txt:2: 203.0.113.0/24: duplicate, first at line 1"},
		{"no relays", "198.51.100.0/24\n", "src.txt:1: no relays for 198.51.100.0/24"},
		{"no relays before comment", "198.51.100.0/24 # r1\n", "src.txt:1: no relays for 198.51.100.0/24"},
		{"trailing garbage field", "10.0.0.0/8 r1 ;\n", `src.txt:1: unknown relay ";"`},
		{"comma separated", "10.0.0.0/8 r1,r2\n", `src.txt:1: unknown relay "r1,r2"`},
		{"truncated last line", "10.0.0.0/8 r1\n198.51.10", `src.txt:2: bad prefix "198.51.10": IPv4 address too short`},
		{"truncated after slash", "10.0.0.0/8 r1\n198.51.100.0/", `src.txt:2: bad prefix "198.51.100.0/": bad bits after slash: ""`},
		{"NUL", "10.0.0.0/8 r1\n\x00\x00\x00\x00", "src.txt:2: NUL byte at column 1"},
		{"NUL in comment", "10.0.0.0/8 r1 # a\x00b\n", "src.txt:1: NUL byte at column 18"},
		{"control char", "10.0.0.0/8\vr1\n", "src.txt:1: control character 0x0b at column 11"},
		{"lone CR", "10.0.0.0/8 r1\r11.0.0.0/8 r1\n", "src.txt:1: control character 0x0d at column 14"},
		{"long line", "10.0.0.0/8 r1\n" + long + "\n11.0.0.0/8 r1\n", fmt.Sprintf("src.txt:2: line longer than %d bytes", maxLineLen)},
		{"long last line", long, fmt.Sprintf("src.txt:1: line longer than %d bytes", maxLineLen)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := ParseFile(bg, tc.in, "src.txt", resolveTest)
			if err == nil {
				t.Fatalf("ParseFile succeeded with %d entries, want %q", b.len(), tc.want)
			}
			if b != nil {
				t.Errorf("ParseFile returned a builder along with an error")
			}
			if err.Error() != tc.want {
				t.Errorf("Error:\n got %q\nwant %q", err, tc.want)
			}
			var le *LineError
			if !errors.As(err, &le) || le.At.File != "src.txt" || le.At.Line == 0 {
				t.Errorf("Error %v carries no *LineError with a position", err)
			}
		})
	}
}

func TestParseFileLineLimit(t *testing.T) {
	// Exactly maxLineLen bytes of content, with either line end, is fine.
	line := "10.0.0.0/8 r1 #"
	line += strings.Repeat("x", maxLineLen-len(line))
	for _, end := range []string{"\n", "\r\n", ""} {
		if _, err := ParseFile(bg, line+end, "f", resolveTest); err != nil {
			t.Errorf("Line of %d bytes ending in %q: %v", len(line), end, err)
		}
	}
	// A line longer than the reader's buffer is skipped as a whole and
	// the next line is still checked.
	huge := strings.Repeat("1", 200<<10)
	_, err := ParseFile(bg, huge+"\n10.0.0.0/8 r9\n", "f", resolveTest)
	want := fmt.Sprintf("f:1: line longer than %d bytes\nf:2: unknown relay \"r9\"", maxLineLen)
	if err == nil || err.Error() != want {
		t.Errorf("Huge line: %v, want %q", err, want)
	}
}

func TestParseFileAllErrors(t *testing.T) {
	// Every line is checked, errors come in file order, and the list is
	// capped with a count of the rest.
	var in strings.Builder
	for i := 0; i < 15; i++ {
		fmt.Fprintf(&in, "10.%d.0.0/16 r9\n", i)
		fmt.Fprintf(&in, "11.%d.0.0/16 r1\n", i)
	}
	_, err := ParseFile(bg, in.String(), "f", resolveTest)
	if err == nil {
		t.Fatal("ParseFile succeeded")
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != maxReported+1 {
		t.Fatalf("Got %d error lines, want %d:\n%v", len(lines), maxReported+1, err)
	}
	for i := 0; i < maxReported; i++ {
		if want := fmt.Sprintf("f:%d: unknown relay \"r9\"", 2*i+1); lines[i] != want {
			t.Errorf("Error %d is %q, want %q", i, lines[i], want)
		}
	}
	if want := "f: 5 more errors not shown"; lines[maxReported] != want {
		t.Errorf("Last line %q, want %q", lines[maxReported], want)
	}
}

func TestParseFileRelayCache(t *testing.T) {
	// Lines alternate between repeated and changed relay lists; each must
	// get its own set even though the parser remembers the lists it saw.
	in := "10.0.0.0/16 r1 r2\n10.1.0.0/16 r1 r2\n10.2.0.0/16 r3\n10.3.0.0/16 r1 r2\n" +
		"10.4.0.0/16 r9\n10.5.0.0/16 r9\n"
	_, err := ParseFile(bg, in, "f", resolveTest)
	if err == nil || err.Error() != "f:5: unknown relay \"r9\"\nf:6: unknown relay \"r9\"" {
		t.Errorf("Unknown relay on consecutive lines: %v", err)
	}
	b, err := ParseFile(bg, in[:strings.Index(in, "10.4")], "f", resolveTest)
	if err != nil {
		t.Fatal(err)
	}
	tab := build(t, b)
	want := [][]int{{1, 2}, {1, 2}, {3}, {1, 2}}
	for i, w := range want {
		if got, _ := tab.Lookup(netip.AddrFrom4([4]byte{10, byte(i), 0, 1})); !slices.Equal(got, w) {
			t.Errorf("10.%d.0.1 -> %v, want %v", i, got, w)
		}
	}
}

func TestQuote(t *testing.T) {
	at80 := strings.Repeat("a", maxQuoted)
	tests := []struct{ in, want string }{
		{"", `""`},
		{"r9", `"r9"`},
		{"r\xff", `"r\xff"`},
		{at80, strconv.Quote(at80)},
		{at80 + "b", strconv.Quote(at80) + "... (81 bytes)"},
		{strings.Repeat("\xff", 4096), strconv.Quote(strings.Repeat("\xff", maxQuoted)) + "... (4096 bytes)"},
		// Cut before a character that straddles the limit, not inside it.
		{at80[2:] + "€x", strconv.Quote(at80[2:]) + "... (82 bytes)"},
		{at80[3:] + "€x", strconv.Quote(at80[3:]+"€") + "... (81 bytes)"},
	}
	for _, tc := range tests {
		if got := Quote(tc.in); got != tc.want {
			t.Errorf("Quote(%.20q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

// TestParseFileLongFields: a file of long garbage fields gets an error
// message that quotes only their start, still names FILE:LINE for each
// reported line, and stays a few KB, whatever the garbage.
func TestParseFileLongFields(t *testing.T) {
	field := func(fill string) string { return strings.Repeat(fill, maxLineLen/len(fill)-64) }
	var lines []string
	for _, fill := range []string{"a", "\xff", "é", "9", ":"} {
		lines = append(lines,
			field(fill)+" r1",                  // bad prefix
			"10.0.0.0/8 "+field(fill),          // unknown relay
			"fe80::1%"+field(fill)+" r1",       // zone
			"10.0.0.0/"+field(fill)+" r1",      // bits
			"1.2.3.4"+field(fill)+" r1",        // trailing garbage
			strings.Repeat(fill, maxLineLen+1), // too long
		)
	}
	text := strings.Join(lines, "\n") + "\n"

	check := func(err error) {
		t.Helper()
		if err == nil {
			t.Fatal("File of garbage loaded")
		}
		msg := err.Error()
		if len(msg) > 4<<10 {
			t.Errorf("Message of %d bytes:\n%.2000s", len(msg), msg)
		}
		got := strings.Split(msg, "\n")
		if len(got) != maxReported+1 {
			t.Fatalf("%d message lines, want %d:\n%s", len(got), maxReported+1, msg)
		}
		for i, l := range got[:maxReported] {
			if want := fmt.Sprintf("big.txt:%d: ", i+1); !strings.HasPrefix(l, want) {
				t.Errorf("Line %d of the message does not start with %q: %.100q", i+1, want, l)
			}
		}
		if want := fmt.Sprintf("big.txt: %d more errors not shown", len(lines)-maxReported); got[maxReported] != want {
			t.Errorf("Last line %q, want %q", got[maxReported], want)
		}
	}
	_, err := ParseFile(bg, text, "big.txt", resolveTest)
	check(err)
	want := `big.txt:2: unknown relay "` + field("a")[:maxQuoted] + fmt.Sprintf(`"... (%d bytes)`, len(field("a")))
	if got := strings.Split(err.Error(), "\n")[1]; got != want {
		t.Errorf("Line 2 of the message:\n got %s\nwant %s", got, want)
	}

	// The same through a loader, as a reload of a good file.
	l := NewFileLoader("big.txt", resolveTest, nil)
	if _, err := l.Load(bg, "10.0.0.0/8 r1\n"); err != nil {
		t.Fatal(err)
	}
	_, err = l.Load(bg, text)
	check(err)
}

// ParseFile stops when its context ends, rather than parse a big file for
// a watcher that is shutting down.
func TestParseFileCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	text := strings.Repeat("10.0.0.0/8 r1\n", 2*ctxCheckLines)
	if _, err := ParseFile(ctx, text, "f", resolveTest); !errors.Is(err, context.Canceled) {
		t.Errorf("ParseFile after cancel: %v", err)
	}
}

// splitLine returns the fields tokenize finds in line as text, and none
// with an error.
func splitLine(line string) (prefix string, relays []string, err error) {
	sp, err := tokenize(line, nil)
	if err != nil || len(sp) == 0 {
		return "", nil, err
	}
	for _, s := range sp[1:] {
		relays = append(relays, line[s.start:s.end])
	}
	return line[sp[0].start:sp[0].end], relays, nil
}

func TestTokenize(t *testing.T) {
	tests := []struct {
		in     string
		prefix string
		relays []string
		err    string
	}{
		{"", "", nil, ""},
		{"   \t ", "", nil, ""},
		{"# comment", "", nil, ""},
		{"10.0.0.0/8", "10.0.0.0/8", nil, ""},
		{"10.0.0.0/8 r1", "10.0.0.0/8", []string{"r1"}, ""},
		{" \t10.0.0.0/8\t\tr1  r2 # c", "10.0.0.0/8", []string{"r1", "r2"}, ""},
		{"10.0.0.0/8 r1\r\n", "10.0.0.0/8", []string{"r1"}, ""},
		{"10.0.0.0/8 r1\n", "10.0.0.0/8", []string{"r1"}, ""},
		{"a#b c", "a", nil, ""},
		{"x ünïcode", "x", []string{"ünïcode"}, ""},
		{"10.0.0.0/8 r1\x00", "", nil, "NUL byte at column 14"},
		{"10.0.0.0/8\fr1", "", nil, "control character 0x0c at column 11"},
		{"10.0.0.0/8 r1\x7f", "", nil, "control character 0x7f at column 14"},
		{"10.0.0.0/8 r1\r\r\n", "", nil, "control character 0x0d at column 14"},
		{"# \x01 in a comment is fine", "", nil, ""},
		{strings.Repeat("x", maxLineLen+1), "", nil, "line longer than 4096 bytes"},
	}
	for _, tc := range tests {
		prefix, relays, err := splitLine(tc.in)
		if tc.err != "" {
			if err == nil || err.Error() != tc.err {
				t.Errorf("tokenize(%q) error %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || prefix != tc.prefix || !slices.Equal(relays, tc.relays) {
			t.Errorf("tokenize(%q) = %q, %q, %v; want %q, %q", tc.in, prefix, relays, err, tc.prefix, tc.relays)
		}
	}
}

// FuzzParseLine feeds one line to the tokenizer and to everything after
// it: ParsePrefix on the first field and ParseFile on the whole line.
func FuzzParseLine(f *testing.F) {
	for _, s := range []string{
		"", "# comment", "10.0.0.0/8 r1", "\t203.0.113.0/24\tr3\r\n",
		"198.51.100.0/24 r1 r2 # two", "2001:db8::/32 r1", "198.51.10",
		"10.0.0.0/8 r1\x00", "a#b", "x\vy", "::ffff:192.0.2.0/120 r2",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		prefix, relays, err := splitLine(line)
		if err != nil {
			if prefix != "" || relays != nil {
				t.Fatalf("splitLine(%q) returned fields with error %v", line, err)
			}
			return
		}
		if prefix == "" && relays != nil {
			t.Fatalf("splitLine(%q) returned relays without a prefix", line)
		}
		for _, fld := range append([]string{prefix}, relays...) {
			if prefix != "" && (fld == "" || strings.ContainsAny(fld, " \t#\r\n\x00")) {
				t.Fatalf("splitLine(%q) returned field %q", line, fld)
			}
			if !strings.Contains(line, fld) {
				t.Fatalf("splitLine(%q) returned %q, which is not in the line", line, fld)
			}
		}
		// The spans are in line order with a separator between any two,
		// as the parser takes the text between them as the relay list.
		sp, _ := tokenize(line, nil)
		for i, s := range sp {
			if s.start >= s.end || s.end > len(line) || (i > 0 && s.start <= sp[i-1].end) {
				t.Fatalf("tokenize(%q) returned spans %v", line, sp)
			}
		}
		// Whatever the tokenizer accepts, the rest of the file path must
		// handle without panicking, and say what is wrong in a message that
		// does not grow with the line.
		if prefix != "" {
			_, _ = ParsePrefix(prefix)
		}
		if _, err := ParseFile(bg, line, "fuzz", resolveTest); err != nil && len(err.Error()) > 1<<10 {
			t.Fatalf("ParseFile of a %d-byte line: message of %d bytes", len(line), len(err.Error()))
		}
	})
}

func TestParseFileDuplicates(t *testing.T) {
	// Duplicates are found after the whole file is read, whatever the
	// order of the lines, and take their place among the other errors by
	// line number.
	in := "10.0.0.0/8 r1\n" + // 1
		"2001:db8::/32 r1\n" + // 2
		"10.1.0.0/16 r9\n" + // 3
		"10.0.0.0/8 r2\n" + // 4
		"11.0.0.0/8 r1\n" + // 5
		"2001:db8::/32 r2\n" + // 6
		"::ffff:10.0.0.0/104 r3\n" // 7
	_, err := ParseFile(bg, in, "f", resolveTest)
	want := "f:3: unknown relay \"r9\"\n" +
		"f:4: 10.0.0.0/8: duplicate, first at line 1\n" +
		"f:6: 2001:db8::/32: duplicate, first at line 2\n" +
		"f:7: 10.0.0.0/8: duplicate, first at line 1"
	if err == nil || err.Error() != want {
		t.Errorf("Error:\n got %v\nwant %s", err, want)
	}

	// Past the cap, the duplicates are counted with the other errors.
	var many strings.Builder
	for i := 0; i < 30; i++ {
		fmt.Fprintf(&many, "10.%d.0.0/16 r1\n", i%5)
	}
	_, err = ParseFile(bg, many.String(), "f", resolveTest)
	lines := strings.Split(fmt.Sprint(err), "\n")
	if len(lines) != maxReported+1 || lines[0] != "f:6: 10.0.0.0/16: duplicate, first at line 1" ||
		lines[maxReported] != "f: 15 more errors not shown" {
		t.Errorf("25 duplicates: %v", err)
	}
}

func TestReadFields(t *testing.T) {
	text := "# header\nr1 drain\r\n\n  r2\tdown  # why\nbad\x01line\n" + strings.Repeat("x y z\n", 12)
	var got []string
	err := ReadFields(text, "admin.txt", func(f []string) error {
		if len(f) == 3 {
			return fmt.Errorf("three fields: %s", Quote(f[2]))
		}
		got = append(got, strings.Join(f, "|"))
		return nil
	})
	if want := "r1|drain r2|down"; strings.Join(got, " ") != want {
		t.Errorf("Fields %q, want %q", strings.Join(got, " "), want)
	}
	msg := err.Error()
	for _, want := range []string{
		"admin.txt:5: control character 0x01 at column 4",
		`admin.txt:6: three fields: "z"`,
		`admin.txt:14: three fields: "z"`,
		"admin.txt: 3 more errors not shown",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("Error %q lacks %q", msg, want)
		}
	}
	if n := strings.Count(msg, "\n") + 1; n != 11 {
		t.Errorf("Error has %d lines, want 10 errors and the count", n)
	}
	if err := ReadFields("# nothing\n\n", "empty", func([]string) error { t.Error("Called for no fields"); return nil }); err != nil {
		t.Errorf("Comment-only text: %v", err)
	}
}

func TestFindPrefix(t *testing.T) {
	text := "# header\n10.0.0.0/8 r1\n\n198.51.100.7 r2 # a host\r\n::ffff:203.0.113.0/120 r1\n2001:DB8::/32 r1\nbad line\n"
	for _, tc := range []struct {
		p    string
		line int
	}{
		{"10.0.0.0/8", 2},
		{"198.51.100.7/32", 4},
		{"203.0.113.0/24", 5}, // written IPv4-mapped
		{"2001:db8::/32", 6},
		{"10.0.0.0/9", 0},
	} {
		line, ok := FindPrefix(text, netip.MustParsePrefix(tc.p))
		if line != tc.line || ok != (tc.line > 0) {
			t.Errorf("FindPrefix(%s) = %d %v, want line %d", tc.p, line, ok, tc.line)
		}
	}
}
