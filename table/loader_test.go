package table

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// TestFileLoader loads random versions of a file, each a few edits from
// the one before, and checks every result against a parse of the whole
// version: the same table, or the same error and the previous table kept.
func TestFileLoader(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	ctx := context.Background()
	// Prefixes from a space big enough for few accidental duplicates.
	randomPrefix := func() string {
		if r.IntN(4) == 0 {
			return netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, byte(r.IntN(256)), byte(r.IntN(256))}), 48).String()
		}
		return fmt.Sprintf("10.%d.%d.0/24", r.IntN(256), r.IntN(256))
	}
	relayList := func() string {
		return strings.Join([]string{"r1", "r2", "r3"}[:1+r.IntN(3)], " ")
	}
	entryLine := func() string {
		switch r.IntN(6) {
		case 0:
			return randomPrefix() + "\t" + relayList() + " # note"
		case 1:
			return randomPrefix() + " " + relayList() + "\r"
		}
		return randomPrefix() + " " + relayList()
	}
	otherLine := func() string {
		switch r.IntN(5) {
		case 0:
			return ""
		case 1:
			return "# comment " + fmt.Sprint(r.IntN(3))
		case 2:
			return randomPrefix() + " r9" // unknown relay
		case 3:
			return "10.0.0.1/24 r1" // host bits
		}
		return "10.1.2.3" // no relays
	}
	// edit changes a few lines of a version, now and then in a way that
	// makes it invalid or too different to patch.
	edit := func(lines []string) []string {
		lines = slices.Clone(lines)
		for range 1 + r.IntN(4) {
			i := r.IntN(len(lines) + 1)
			switch op := r.IntN(20); {
			case op < 5 && i < len(lines):
				lines = slices.Delete(lines, i, i+1)
			case op < 10 && i < len(lines):
				lines[i] = entryLine()
			case op < 15:
				lines = slices.Insert(lines, i, entryLine())
			case op < 16 && i < len(lines):
				j := r.IntN(len(lines))
				lines[i], lines[j] = lines[j], lines[i]
			case op < 17:
				lines = slices.Insert(lines, i, otherLine())
			case op < 18:
				block := make([]string, resyncWindow+1+r.IntN(10))
				for k := range block {
					block[k] = entryLine()
				}
				lines = slices.Insert(lines, i, block...)
			case op < 19 && i < len(lines):
				lines = slices.Insert(lines, i, lines[i]) // a duplicate
			}
		}
		return lines
	}
	text := func(lines []string) string {
		s := strings.Join(lines, "\n")
		if r.IntN(8) != 0 {
			s += "\n"
		}
		if r.IntN(16) == 0 {
			s = "\uFEFF" + s
		}
		return s
	}
	// whole parses a version with ParseFile and builds it from scratch.
	whole := func(text string, overrides []Override) (*Table, error) {
		b, err := ParseFile(bg, string(text), "s.txt", resolveTest)
		if err != nil {
			return nil, err
		}
		for _, o := range overrides {
			if err := b.override(o.Prefix, o.Relays, o.Origin); err != nil {
				t.Fatal(err)
			}
		}
		return b.Build()
	}

	patched, failed := 0, 0
	for round := range 40 {
		var overrides []Override
		for range r.IntN(3) {
			overrides = append(overrides, Override{Prefix: netip.MustParsePrefix(randomPrefix()), Relays: []int{1 + r.IntN(4)}})
		}
		l := NewFileLoader("s.txt", resolveTest, overrides)
		var lines []string
		for i := range 50 + r.IntN(200) {
			lines = append(lines, fmt.Sprintf("192.0.%d.%d/32 %s", i/256, i%256, relayList()))
		}
		var loaded *Table
		for version := range 30 {
			next := edit(lines)
			if version == 0 {
				next = lines
			}
			txt := text(next)
			want, wantErr := whole(txt, overrides)
			_, _, _, patchable := l.patch(txt)
			var before []string
			if loaded != nil {
				before = contents(loaded)
			}
			got, err := l.Load(ctx, txt)
			where := fmt.Sprintf("round %d version %d (patched %v)", round, version, patchable)
			if (err != nil) != (wantErr != nil) || (err != nil && err.Error() != wantErr.Error()) {
				t.Fatalf("%s: Load error %v, want %v", where, err, wantErr)
			}
			if loaded != nil && !slices.Equal(contents(loaded), before) {
				t.Fatalf("%s: Load changed the previous table", where)
			}
			if err != nil {
				failed++
				continue // the next version is compared with the last good one
			}
			if !slices.Equal(contents(got), contents(want)) {
				t.Fatalf("%s: Load gave\n%v\nwant\n%v", where, contents(got), contents(want))
			}
			if liveSets(got) != liveSets(want) {
				t.Fatalf("%s: liveSets %d, want %d", where, liveSets(got), liveSets(want))
			}
			if patchable {
				patched++
			}
			if (l.ChangedLines() >= 0) != patchable {
				t.Fatalf("%s: ChangedLines %d", where, l.ChangedLines())
			}
			loaded, lines = got, next
		}
	}
	t.Logf("%d versions patched, %d failed", patched, failed)
	// The check is only worth something if both ways were taken often.
	if patched < 400 || failed < 50 {
		t.Errorf("%d versions patched, %d failed; the edits no longer exercise both paths", patched, failed)
	}
}

// TestFileLoaderOverrides covers the prefix of an inline line coming and
// going in the file: hidden while there, still a duplicate if twice.
func TestFileLoaderOverrides(t *testing.T) {
	ctx := context.Background()
	over := []Override{{Prefix: netip.MustParsePrefix("10.0.0.0/8"), Relays: []int{4}}}
	l := NewFileLoader("s.txt", resolveTest, over)
	// Enough lines that changing a few is a patch.
	var filler strings.Builder
	for i := range 256 {
		fmt.Fprintf(&filler, "192.0.2.%d/32 r1\n", i)
	}
	steps := []struct {
		text    string
		want    string // relays of 10.1.1.1, or the error
		patched bool
	}{
		{"", "[4]", false},
		{"10.0.0.0/8 r2\n", "[4]", true},
		{"10.0.0.0/8 r2\n10.0.0.0/8 r3\n", "s.txt:258: 10.0.0.0/8: duplicate, first at line 257", false},
		{"10.0.0.0/8 r3\n", "[4]", true},
		{"", "[4]", true},
		{"10.0.0.0/8 r1\n10.1.0.0/16 r2\n", "[2]", true},
	}
	for i, st := range steps {
		text := filler.String() + st.text
		_, _, _, patched := l.patch(text)
		tab, err := l.Load(ctx, text)
		got := ""
		if err != nil {
			got = err.Error()
		} else {
			rs, _ := tab.Lookup(netip.MustParseAddr("10.1.1.1"))
			got = fmt.Sprint(rs)
		}
		if got != st.want || patched != st.patched {
			t.Errorf("Step %d: %s (patched %v), want %s (patched %v)", i, got, patched, st.want, st.patched)
		}
	}
}

// A byte order mark counts at the start of a file and nowhere else, so a
// line that keeps its text but moves to or from the start is not the same
// line to the parser: a patch agrees with a parse of the whole version.
func TestFileLoaderByteOrderMark(t *testing.T) {
	ctx := context.Background()
	const bom = "\uFEFF"
	for _, tc := range []struct {
		name, old, new string
		changed        int // lines the patch applies, when new loads
	}{
		{"a line inserted before the marked one", bom + "10.0.0.0/8 r1\n", "192.0.2.0/24 r2\n" + bom + "10.0.0.0/8 r1\n", 0},
		{"the mark moved to an inserted line", bom + "10.0.0.0/8 r1\n", bom + "192.0.2.0/24 r2\n10.0.0.0/8 r1\n", 1},
		{"the mark removed", bom + "10.0.0.0/8 r1\n", "10.0.0.0/8 r1\n", 0},
		{"the mark added", "10.0.0.0/8 r1\n", bom + "10.0.0.0/8 r1\n", 0},
		{"the mark twice", bom + "10.0.0.0/8 r1\n", bom + bom + "10.0.0.0/8 r1\n", 0},
		{"the first line gone, the mark added", "192.0.2.0/24 r2\n10.0.0.0/8 r1\n", bom + "10.0.0.0/8 r1\n", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := NewFileLoader("s.txt", resolveTest, nil)
			if _, err := l.Load(ctx, tc.old); err != nil {
				t.Fatal(err)
			}
			got, err := l.Load(ctx, tc.new)
			b, wantErr := ParseFile(bg, tc.new, "s.txt", resolveTest)
			if (err != nil) != (wantErr != nil) || err != nil && err.Error() != wantErr.Error() {
				t.Fatalf("Load error %v, want %v as a whole parse", err, wantErr)
			}
			if err != nil {
				return
			}
			want, err := b.Build()
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(contents(got), contents(want)) {
				t.Errorf("Load gave %v, want %v", contents(got), contents(want))
			}
			if n := l.ChangedLines(); n != tc.changed {
				t.Errorf("ChangedLines %d, want %d", n, tc.changed)
			}
		})
	}
}

// FuzzFileLoader loads old and then new, and checks the result against a
// parse of new alone.
func FuzzFileLoader(f *testing.F) {
	f.Add("10.0.0.0/8 r1\n# c\n2001:db8::/32 r2 r3\n", "10.0.0.0/8 r2\n2001:db8::/32 r2 r3\n10.1.0.0/16 r1\n")
	f.Add("\uFEFF10.1.0.0/16 r1\r\n10.2.0.0/16 r2", "10.2.0.0/16 r2\n10.1.0.0/16 r1\n10.2.0.0/16 r3\n")
	f.Add("\uFEFF10.1.0.0/16 r1\n", "10.2.0.0/16 r2\n\uFEFF10.1.0.0/16 r1\n")
	over := []Override{{Prefix: netip.MustParsePrefix("10.0.0.0/8"), Relays: []int{3}}}
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, old, new string) {
		l := NewFileLoader("f", resolveTest, over)
		if _, err := l.Load(ctx, old); err != nil {
			return
		}
		got, err := l.Load(ctx, new)
		b, wantErr := ParseFile(bg, string(new), "f", resolveTest)
		var want *Table
		if wantErr == nil {
			if err := b.override(over[0].Prefix, over[0].Relays, over[0].Origin); err != nil {
				t.Fatal(err)
			}
			want, wantErr = b.Build()
		}
		if (err != nil) != (wantErr != nil) || (err != nil && err.Error() != wantErr.Error()) {
			t.Fatalf("Load error %v, want %v", err, wantErr)
		}
		if err == nil && !slices.Equal(contents(got), contents(want)) {
			t.Fatalf("Load gave %v, want %v", contents(got), contents(want))
		}
	})
}

func TestDiffLines(t *testing.T) {
	many := func(n int, f string) string {
		var b strings.Builder
		for i := range n {
			fmt.Fprintf(&b, f, i)
		}
		return b.String()
	}
	for _, tc := range []struct {
		old, new       string
		removed, added []string
		ok             bool
	}{
		{"a\nb\n", "a\nb\n", nil, nil, true},
		{"", "", nil, nil, true},
		{"a\nb\nc\n", "a\nB\nc\n", []string{"b"}, []string{"B"}, true},
		{"a\nb\nc\n", "x\na\nb\nc\n", nil, []string{"x"}, true},
		{"a\nb\nc\n", "a\nc\n", []string{"b"}, nil, true},
		{"a\nb", "a\nb\n", nil, nil, true},
		{"a\nb\n", "a\nbc", []string{"b"}, []string{"bc"}, true},
		{"a\nb\n", "a\nb\nc", nil, []string{"c"}, true},
		{"", "a\n", nil, []string{"a"}, true},
		{"a\n", "", []string{"a"}, nil, true},
		{"a\nb\nc\nd\n", "a\nc\nb\nd\n", []string{"c"}, []string{"c"}, true},
		// A long block at the end: the rest of both texts.
		{"a\n", "a\n" + many(100, "n%d\n"), nil, strings.Fields(many(100, "n%d\n")), true},
		// A long block in the middle: no match in sight.
		{"a\n" + many(100, "o%d\n") + "z\n", "a\n" + many(100, "n%d\n") + "z\n", nil, nil, false},
		// Over the limit of 200 changes.
		{many(300, "o%d\n"), many(300, "n%d\n"), nil, nil, false},
	} {
		removed, added, ok := diffLines(tc.old, tc.new, 200)
		if ok != tc.ok || !slices.Equal(texts(removed), tc.removed) || !slices.Equal(texts(added), tc.added) {
			t.Errorf("diffLines(%q, %q) = %q, %q, %v; want %q, %q, %v", tc.old, tc.new,
				texts(removed), texts(added), ok, tc.removed, tc.added, tc.ok)
		}
	}
}

func texts(lines []fileLine) []string {
	var out []string
	for _, l := range lines {
		out = append(out, l.String())
	}
	return out
}

// FuzzDiffLines checks that the lines diffLines reports turn the lines of
// old into those of new, counted as a multiset: that is all a patch needs.
func FuzzDiffLines(f *testing.F) {
	f.Add("a\nb\nc\n", "a\nB\nc\nd")
	f.Add("\uFEFFx\r\n\n#c\n", "x\r\n#c\n\n")
	f.Fuzz(func(t *testing.T, old, new string) {
		removed, added, ok := diffLines(old, new, 1<<20)
		if !ok {
			return
		}
		count := map[string]int{}
		for _, l := range textLines(old) {
			count[l]++
		}
		for _, l := range removed {
			count[l.String()]--
		}
		for _, l := range added {
			count[l.String()]++
		}
		for _, l := range textLines(new) {
			count[l]--
		}
		for l, n := range count {
			if n != 0 {
				t.Fatalf("Line %q off by %d: removed %q, added %q", l, n, texts(removed), texts(added))
			}
		}
	})
}

func textLines(b string) []string {
	s := strings.TrimSuffix(string(b), "\n")
	if len(b) == 0 {
		return nil
	}
	return strings.Split(s, "\n")
}
