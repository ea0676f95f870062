package table

import (
	"context"
	"hash/maphash"
	"io"
	"os"
	"slices"
	"time"
	"unsafe"
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

// contentSeed keys Sum. The hash is not a cryptographic one: it guards
// against reloading a file that did not change, not against an attacker,
// and a random key per process leaves no way to make two versions
// collide on purpose. It reads a 45 MB file an order of magnitude faster
// than SHA-256 (BenchmarkContentHash).
var contentSeed = maphash.MakeSeed()

func contentSum(text string) uint64 { return maphash.String(contentSeed, text) }

// Stat returns the size and modification time of path, with Sum unset.
func Stat(path string) (FileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return FileStamp{}, err
	}
	return FileStamp{Size: fi.Size(), ModTime: fi.ModTime()}, nil
}

// SameStat reports whether s and o have the same size and modification time.
func (s FileStamp) SameStat(o FileStamp) bool {
	return s.Size == o.Size && s.ModTime.Equal(o.ModTime)
}

// Check compares path with prev, the stamp of the version last loaded. It
// reads the file only when size or modification time differ, and reports
// changed, with the contents, only when those differ too. cur is the stamp
// to keep for the next call (with Sum set whenever the file was read; if
// it was not, cur is prev).
//
// The stamp describes the bytes returned, even if the file is replaced or
// rewritten meanwhile; such a change changes the stamp again and is caught
// on the next call.
func Check(ctx context.Context, path string, prev FileStamp) (text string, cur FileStamp, changed bool, err error) {
	cur, err = Stat(path)
	if err != nil {
		return "", prev, false, err
	}
	if cur.SameStat(prev) {
		return "", prev, false, nil
	}
	text, cur, err = ReadFile(ctx, path)
	if err != nil {
		return "", prev, false, err
	}
	if prev.hashed && cur.Sum == prev.Sum {
		return "", cur, false, nil
	}
	return text, cur, true, nil
}

// ReadFile returns the contents of path and their stamp, Sum included.
// The size and modification time are those of the file read, even if path
// is replaced meanwhile. It stops with ctx's error when ctx ends, between
// reads of a few MiB.
func ReadFile(ctx context.Context, path string) (string, FileStamp, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", FileStamp{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", FileStamp{}, err
	}
	st := FileStamp{Size: fi.Size(), ModTime: fi.ModTime()}
	// One more byte than the size finds the end of a file that did not
	// grow in the one allocation.
	buf := make([]byte, 0, max(st.Size, 0)+1)
	for {
		if err := ctx.Err(); err != nil {
			return "", FileStamp{}, err
		}
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, readChunk)
		}
		n, err := f.Read(buf[len(buf):min(cap(buf), len(buf)+readChunk)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", FileStamp{}, err
		}
	}
	// The bytes become the string without a copy, as strings.Builder does:
	// nothing else refers to buf, so they can never change. A copy of a
	// big file would be most of the cost of a reload that changes little.
	text := unsafe.String(unsafe.SliceData(buf), len(buf))
	st.Sum, st.hashed = contentSum(text), true
	return text, st, nil
}

// readChunk is how much ReadFile reads between checks of its context.
const readChunk = 4 << 20
