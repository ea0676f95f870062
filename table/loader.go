package table

import (
	"context"
	"maps"
	"net/netip"
	"slices"
	"strings"
)

// Override is an entry that wins over the file's entry for the same prefix
// (an inline Corefile line).
type Override struct {
	Prefix netip.Prefix
	Relays []int
	Origin Origin
}

// FileLoader turns successive versions of one sources file into Tables.
// It keeps the text of the version it loaded last: a new version that
// differs in a few lines then costs a comparison of the two texts and the
// parsing of the lines that changed, applied to the previous table by
// copy-on-write, rather than a parse of every line. A routing-table-sized
// file regenerated every few seconds with a handful of changed routes is
// the case this is for.
//
// A FileLoader is not safe for concurrent use; the Tables it returns are.
type FileLoader struct {
	name      string
	resolve   func(relay string) (int, bool)
	overrides []Override

	// The version last loaded, which the next one is compared with.
	text  string
	table *Table
	// fileHas holds the prefix of every override, and whether text also
	// has a line for it: such a line is hidden in the table, but a second
	// line for the same prefix is still a duplicate.
	fileHas map[netip.Prefix]bool
	changed int // lines the last Load applied, -1 for a whole parse
}

// NewFileLoader returns a loader for the file called name (used in
// messages and origins); resolve maps a relay name to its index, and
// overrides are laid over every version.
func NewFileLoader(name string, resolve func(relay string) (int, bool), overrides []Override) *FileLoader {
	return &FileLoader{name: name, resolve: resolve, overrides: overrides}
}

// Load returns the table of text, the whole contents of a version of the
// file, with the overrides laid over it. It fails as ParseFile does, with
// the same messages, or with ctx's error if ctx ends first. On success
// the loader keeps text, to compare the next version with.
func (l *FileLoader) Load(ctx context.Context, text string) (*Table, error) {
	if t, fileHas, changed, ok := l.patch(text); ok {
		l.text, l.table, l.fileHas, l.changed = text, t, fileHas, changed
		return t, nil
	}
	b, err := ParseFile(ctx, text, l.name, l.resolve)
	if err != nil {
		return nil, err
	}
	for _, o := range l.overrides {
		if err := b.override(o.Prefix, o.Relays, o.Origin); err != nil {
			return nil, &LineError{At: o.Origin, Err: err}
		}
	}
	t, err := b.buildFrom(l.table)
	if err != nil {
		return nil, err // cannot happen: ParseFile reported the duplicates
	}
	fileHas := make(map[netip.Prefix]bool, len(l.overrides))
	for _, o := range l.overrides {
		p, _ := normalize(o.Prefix) // override above succeeded
		fileHas[p] = b.has(p)
	}
	l.text, l.table, l.fileHas, l.changed = text, t, fileHas, -1
	return t, nil
}

// ChangedLines returns the number of changed lines (old and new ones) the
// last successful Load applied to the table before it, or -1 if it parsed
// the whole file.
func (l *FileLoader) ChangedLines() int { return l.changed }

// maxPatchShare: Load parses the whole file when more than one line in
// maxPatchShare changed. A changed route is two lines (the old one and the
// new one) and one persistent insert, so this allows about as many inserts
// as buildFrom's maxUpdateShare, which a whole parse would then apply.
const maxPatchShare = maxUpdateShare / 2

// patch returns the table of text made from the one of the version
// loaded last, and ok false when that is not possible or not worth it:
// no version loaded yet, too many changes, or a changed line with a
// problem, which a full parse reports with its line number.
func (l *FileLoader) patch(text string) (t *Table, fileHas map[netip.Prefix]bool, changed int, ok bool) {
	prev := l.table
	if prev == nil || prev.trie == nil {
		return nil, nil, 0, false
	}
	// A small file is cheap to parse whole, but as cheap to patch.
	limit := max(prev.trie.Size()/maxPatchShare, 16)
	// ParseFile drops a byte order mark at the start of the text, and only there. Without it, the
	// lines of both versions are what the parser sees, wherever a line moves: compared and parsed
	// as they are, they cannot keep a line that a parse of the whole version rejects.
	removed, added, ok := diffLines(strings.TrimPrefix(l.text, byteOrderMark), strings.TrimPrefix(text, byteOrderMark), limit)
	if !ok {
		return nil, nil, 0, false
	}

	// The lines that left: their prefixes, which parsed when they came.
	fp := newFileParser(l.name, l.resolve)
	gone := make(map[netip.Prefix]bool, len(removed))
	for _, ln := range removed {
		p, ok, err := fp.prefix(ln.String())
		if err != nil {
			return nil, nil, 0, false
		}
		if ok {
			gone[p] = true
		}
	}
	// The lines that came, fully checked.
	for _, ln := range added {
		if fp.line(ln.String(), 0) != nil {
			return nil, nil, 0, false
		}
	}
	if dups, _ := fp.b.duplicates(1); len(dups) > 0 {
		return nil, nil, 0, false
	}

	fileHas = maps.Clone(l.fileHas)
	sets := newSetNumbers(prev, fp.b, slices.Clone(prev.refs))
	trie := prev.trie
	for p := range gone {
		if _, over := fileHas[p]; over {
			fileHas[p] = false
			delete(gone, p)
		}
	}
	// Insert the new lines' prefixes first: a line whose relays changed
	// is then one insert that replaces the old value, rather than a
	// delete and an insert, each of which copies a path of the trie.
	for i := range fp.b.entries {
		e := &fp.b.entries[i]
		p := e.prefix()
		if has, over := fileHas[p]; over {
			if has {
				return nil, nil, 0, false // a second line for the prefix
			}
			fileHas[p] = true
			continue
		}
		if old, found := trie.Get(p); found {
			if !gone[p] {
				return nil, nil, 0, false // a line that stayed has the prefix
			}
			delete(gone, p)
			sets.unref(old)
		}
		trie = trie.InsertPersist(p, sets.ref(e.set))
	}
	for p := range gone {
		old, found := trie.Get(p)
		if !found {
			return nil, nil, 0, false // cannot happen: the old text had the line
		}
		sets.unref(old)
		trie = trie.DeletePersist(p)
	}
	if tooManyStale(sets.refs) {
		return nil, nil, 0, false
	}
	return sets.table(trie), fileHas, len(removed) + len(added), true
}

// resyncWindow is how many lines past a difference diffLines looks for
// the two texts to agree again. Changes to a routing-table file come as a
// few lines here and there; a block of new lines longer than this ends
// the comparison and the file is parsed whole.
const resyncWindow = 64

// diffLines returns the lines of old that are not in new and the lines of
// new that are not in old, matching the two in order, or ok false when
// they differ by more than limit lines or by a block too long to match
// up. Equal stretches are compared as whole runs of bytes, not line by
// line, so two texts of a million lines that differ in a few cost little
// more than a memory comparison.
//
// Any matching of equal lines gives a correct answer; a poor one only
// reports more lines as changed than need be.
func diffLines(old, new string, limit int) (removed, added []fileLine, ok bool) {
	i, j := 0, 0 // starts of lines, in old and new
	for {
		n := commonPrefix(old[i:], new[j:])
		if i+n == len(old) && j+n == len(new) {
			return removed, added, true
		}
		// Back to the start of the line where they part.
		k := strings.LastIndexByte(old[i:i+n], '\n') + 1
		i, j = i+k, j+k

		a, b, matched := resync(old, i, new, j)
		if a < 0 || len(removed)+len(added)+a+b > limit {
			return nil, nil, false
		}
		for range a {
			var ln fileLine
			ln, i = lineAt(old, i)
			removed = append(removed, ln)
		}
		for range b {
			var ln fileLine
			ln, j = lineAt(new, j)
			added = append(added, ln)
		}
		if matched {
			_, i = lineAt(old, i)
			_, j = lineAt(new, j)
		}
	}
}

// resync finds the nearest pair of equal lines, the a-th line of old from
// i and the b-th of new from j, nearest meaning smallest a+b. When there
// is none within resyncWindow lines but one text ends within it, every
// line left in both is a change: matched is false and a and b count
// them. a is -1 when neither holds.
func resync(old string, i int, new string, j int) (a, b int, matched bool) {
	olds := lineWindow{s: old, next: i}
	news := lineWindow{s: new, next: j}
	// Most differences are a line or two: lines are split off as the
	// search reaches them.
	for s := 0; s <= 2*resyncWindow; s++ {
		olds.extend(s)
		news.extend(s)
		for a := max(0, s-len(news.lines)+1); a <= min(s, len(olds.lines)-1); a++ {
			if olds.lines[a].String() == news.lines[s-a].String() {
				return a, s - a, true
			}
		}
	}
	if olds.ended() || news.ended() {
		return countLines(old, i), countLines(new, j), false
	}
	return -1, 0, false
}

// lineWindow is the next few lines of a text, split off as needed.
type lineWindow struct {
	s     string
	next  int // start of the line after the last of lines
	lines []fileLine
}

// extend splits off lines until there are n+1 of them, at most
// resyncWindow+1, or the text ends.
func (w *lineWindow) extend(n int) {
	for len(w.lines) <= min(n, resyncWindow) && w.next < len(w.s) {
		var ln fileLine
		ln, w.next = lineAt(w.s, w.next)
		w.lines = append(w.lines, ln)
	}
}

// ended reports whether the text ends within the window.
func (w *lineWindow) ended() bool { return w.next == len(w.s) && len(w.lines) <= resyncWindow }

// commonPrefix returns the length of the longest common prefix of a and
// b. It compares blocks, which runs at memory speed, and only goes byte
// by byte in the block where they differ.
func commonPrefix(a, b string) int {
	const block = 256
	n := min(len(a), len(b))
	i := 0
	for i+block <= n && a[i:i+block] == b[i:i+block] {
		i += block
	}
	for i < n && a[i] == b[i] {
		i++
	}
	return i
}
