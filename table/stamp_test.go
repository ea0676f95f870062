package table

import (
	"context"
	"crypto/sha256"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestCheck(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sources.txt")
	write := func(content string, mtime time.Time) {
		t.Helper()
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(path, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	t0 := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	write("10.0.0.0/8 r1\n", t0)
	ctx := context.Background()

	// The first check always loads.
	text, st, changed, err := Check(ctx, path, FileStamp{})
	if err != nil || !changed || text != "10.0.0.0/8 r1\n" {
		t.Fatalf("First Check = %q, %v, %v; want the contents, changed", text, changed, err)
	}
	if st.Size != 14 || !st.ModTime.Equal(t0) || st.Sum != contentSum("10.0.0.0/8 r1\n") {
		t.Errorf("Stamp %+v", st)
	}

	// Nothing happened: no hashing needed, nothing changed.
	text, again, changed, err := Check(ctx, path, st)
	if err != nil || changed || again != st || text != "" {
		t.Errorf("Unchanged file: %q, %+v, %v, %v", text, again, changed, err)
	}

	// Touched only: not a change, but the new stamp saves the next hash.
	t1 := t0.Add(time.Minute)
	write("10.0.0.0/8 r1\n", t1)
	_, touched, changed, err := Check(ctx, path, st)
	if err != nil || changed || !touched.ModTime.Equal(t1) || touched.Sum != st.Sum {
		t.Errorf("Touched file: %+v, %v, %v", touched, changed, err)
	}

	// Same size, new contents and time.
	t2 := t1.Add(time.Minute)
	write("10.0.0.0/8 r2\n", t2)
	text, edited, changed, err := Check(ctx, path, touched)
	if err != nil || !changed || edited.Sum == touched.Sum || text != "10.0.0.0/8 r2\n" {
		t.Errorf("Edited file: %+v, %v, %v", edited, changed, err)
	}

	// A failed check keeps the previous stamp, so a file that comes back
	// unchanged does not count as new.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	_, kept, changed, err := Check(ctx, path, edited)
	if err == nil || changed || kept != edited {
		t.Errorf("Missing file: %+v, %v, %v", kept, changed, err)
	}
	if _, err := Stat(path); err == nil {
		t.Errorf("Stat of a missing file succeeded")
	}
	if _, _, err := ReadFile(ctx, path); err == nil {
		t.Errorf("ReadFile of a missing file succeeded")
	}
}

func TestSameStat(t *testing.T) {
	t0 := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	a := FileStamp{Size: 1, ModTime: t0}
	if !a.SameStat(FileStamp{Size: 1, ModTime: t0.In(time.FixedZone("x", 3600)), Sum: 1}) {
		t.Errorf("SameStat depends on the time zone or the sum")
	}
	if a.SameStat(FileStamp{Size: 2, ModTime: t0}) || a.SameStat(FileStamp{Size: 1, ModTime: t0.Add(1)}) {
		t.Errorf("SameStat ignores size or time")
	}
}

// BenchmarkContentHash compares the hash Check uses with SHA-256 on a
// file the size of the 1.2M-line benchmark table.
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
