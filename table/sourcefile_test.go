package table

import (
	"context"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fakeClock is a SourceFile clock that moves only when told to.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

func writeAt(t *testing.T, path, content string, mtime time.Time) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, mtime, mtime); err != nil {
		t.Fatal(err)
	}
}

func TestSourceFileVersions(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sources.txt")
	t0 := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	writeAt(t, path, "10.0.0.0/8 r1\n", t0)
	ctx := context.Background()
	f := NewSourceFile(path, 0)

	next := func(what string, wantText string, wantChanged bool) {
		t.Helper()
		text, changed, wait, err := f.Next(ctx)
		if err != nil || changed != wantChanged || text != wantText || wait != 0 {
			t.Fatalf("%s: Next = %q, %v, %v, %v; want %q, %v", what, text, changed, wait, err, wantText, wantChanged)
		}
	}
	next("first", "10.0.0.0/8 r1\n", true)
	if f.last.Size != 14 || !f.last.ModTime.Equal(t0) || f.last.Sum != contentSum("10.0.0.0/8 r1\n") {
		t.Errorf("Stamp %+v", f.last)
	}
	next("unchanged", "", false)

	// Touched only: not a change, and the new time is kept, so the next
	// check costs a stat again.
	t1 := t0.Add(time.Minute)
	writeAt(t, path, "10.0.0.0/8 r1\n", t1)
	next("touched", "", false)
	if !f.last.ModTime.Equal(t1) {
		t.Errorf("Touched file: stamp %+v, want time %v", f.last, t1)
	}

	t2 := t1.Add(time.Minute)
	writeAt(t, path, "10.0.0.0/8 r2\n", t2)
	next("same size, new contents", "10.0.0.0/8 r2\n", true)

	// An error changes nothing: a file that comes back as it was is no change.
	if err := os.Rename(path, path+".away"); err != nil {
		t.Fatal(err)
	}
	if _, changed, _, err := f.Next(ctx); err == nil || changed {
		t.Errorf("Missing file: changed %v, err %v", changed, err)
	}
	if err := os.Rename(path+".away", path); err != nil {
		t.Fatal(err)
	}
	next("back unchanged", "", false)
}

// A file whose time is recent is read only once it kept its size and time
// for SettleTime; a write meanwhile starts the wait again.
func TestSourceFileSettles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sources.txt")
	clock := &fakeClock{t: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
	f := NewSourceFile(path, 0)
	f.now = clock.now
	ctx := context.Background()

	writeAt(t, path, "10.0.0.0/8 r1\n", clock.t)
	check := func(what string, wantChanged bool, wantWait time.Duration) {
		t.Helper()
		text, changed, wait, err := f.Next(ctx)
		if err != nil || changed != wantChanged || wait != wantWait || changed != (text != "") {
			t.Fatalf("%s: Next = %q, %v, wait %v, %v; want changed %v, wait %v", what, text, changed, wait, err, wantChanged, wantWait)
		}
	}
	check("just written", false, SettleTime)
	clock.advance(SettleTime / 4)
	check("a quarter later", false, SettleTime*3/4)

	// Half written: the cut version must never be returned.
	writeAt(t, path, "10.0.0.0/8 r1\n10.1.0.0/16", clock.t)
	check("written again", false, SettleTime)
	clock.advance(SettleTime / 2)
	writeAt(t, path, "10.0.0.0/8 r1\n10.1.0.0/16 r2\n", clock.t)
	check("finished", false, SettleTime)
	clock.advance(SettleTime)
	check("settled", true, 0)
	if got := f.last.Size; got != int64(len("10.0.0.0/8 r1\n10.1.0.0/16 r2\n")) {
		t.Errorf("Read %d bytes, want the finished file", got)
	}

	// A time well in the past needs no wait.
	writeAt(t, path, "10.0.0.0/8 r3\n", clock.t.Add(-settleByAge))
	check("old time", true, 0)
}

func TestSourceFileRefusesOtherFiles(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "zero")
	if err := os.Symlink("/dev/zero", link); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{fifo, dir, link} {
		done := make(chan error, 1)
		go func() {
			_, _, _, err := NewSourceFile(path, 0).Next(context.Background())
			done <- err
		}()
		select {
		case err := <-done:
			if !errors.Is(err, ErrNotRegular) || !strings.HasPrefix(err.Error(), path+": not a regular file") {
				t.Errorf("%s: error %v, want %q", path, err, path+": not a regular file")
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: Next blocked", path)
		}
	}

	// Swapped in between the stat and the open: the read itself refuses it,
	// and opening the FIFO does not wait for a writer.
	f := NewSourceFile(fifo, 0)
	done := make(chan error, 1)
	go func() {
		_, _, err := f.read(context.Background())
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, ErrNotRegular) {
			t.Errorf("read of a FIFO: %v, want ErrNotRegular", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("read of a FIFO blocked")
	}
}

func TestSourceFileSizeLimit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sparse")
	fh, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	// A terabyte of nothing, which must be refused without being read.
	if err := fh.Truncate(1 << 40); err != nil {
		t.Skipf("File system cannot hold a sparse 1 TiB file: %v", err)
	}
	fh.Close()
	_, _, _, err = NewSourceFile(path, 0).Next(context.Background())
	want := path + ": larger than max_size 268435456 bytes (1099511627776 bytes)"
	if !errors.Is(err, ErrTooLarge) || err.Error() != want {
		t.Errorf("Error %v, want %q", err, want)
	}

	// A file that grows while it is read: /proc files have size 0 and
	// contents, so only the limit on the read itself can stop them.
	f := NewSourceFile("/proc/self/maps", 16)
	if _, _, err := f.read(context.Background()); !errors.Is(err, ErrTooLarge) {
		t.Errorf("Reading past the limit: %v, want ErrTooLarge", err)
	}
}

func TestSourceFileFirst(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sources.txt")
	ctx := context.Background()
	// Written just now: First waits for it to settle.
	writeAt(t, path, "10.0.0.0/8 r1\n", time.Now())
	start := time.Now()
	text, err := NewSourceFile(path, 0).First(ctx, time.Second)
	if err != nil || text != "10.0.0.0/8 r1\n" {
		t.Fatalf("First = %q, %v", text, err)
	}
	if waited := time.Since(start); waited < SettleTime {
		t.Errorf("First returned after %v, before the file settled (%v)", waited, SettleTime)
	}

	// A file that keeps changing is an error, after the limit.
	f := NewSourceFile(path, 0)
	clock := &fakeClock{t: time.Now()}
	f.now = func() time.Time {
		clock.advance(SettleTime / 2)
		writeAt(t, path, "10.0.0.0/8 r1\n"+clock.t.String(), clock.t)
		return clock.t
	}
	if _, err := f.First(ctx, 3*SettleTime); err == nil || !strings.Contains(err.Error(), "still being written") {
		t.Errorf("First of a changing file: %v", err)
	}

	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if _, err := NewSourceFile(path, 0).First(ctx, time.Second); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("First of a missing file: %v", err)
	}
}

// BenchmarkContentHash compares the hash the SourceFile uses with SHA-256
// on a file the size of the 1.2M-line benchmark table.
func BenchmarkContentHash(b *testing.B) {
	buf := make([]byte, 45<<20)
	for i := range buf {
		buf[i] = byte(i*7 + i>>9)
	}
	text := string(buf)
	b.Run("maphash", func(b *testing.B) {
		b.SetBytes(int64(len(text)))
		for b.Loop() {
			contentSum(text)
		}
	})
	b.Run("sha256", func(b *testing.B) {
		b.SetBytes(int64(len(text)))
		for b.Loop() {
			sha256.Sum256(buf)
		}
	})
}
