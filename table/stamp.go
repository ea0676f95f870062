package table

import (
	"crypto/sha256"
	"io"
	"os"
	"time"
)

// FileStamp identifies a version of a sources file. Size and ModTime are
// cheap to get and catch almost every change; Sum settles the rest and
// keeps a touch or an identical rewrite from causing a reload.
type FileStamp struct {
	Size    int64
	ModTime time.Time
	Sum     [32]byte // SHA-256 of the contents; zero until hashed
}

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
// hashes the file only when size or modification time differ, and reports
// changed only when the contents differ too. cur is the stamp to keep for
// the next call (with Sum set whenever the file was hashed; if it was not,
// cur is prev).
//
// The stamp describes the bytes hashed, not necessarily the bytes a later
// read sees if the file is rewritten in between; such a rewrite changes the
// stamp again and is caught on the next call.
func Check(path string, prev FileStamp) (cur FileStamp, changed bool, err error) {
	cur, err = Stat(path)
	if err != nil {
		return prev, false, err
	}
	if cur.SameStat(prev) {
		return prev, false, nil
	}
	cur.Sum, err = HashFile(path)
	if err != nil {
		return prev, false, err
	}
	return cur, cur.Sum != prev.Sum, nil
}

// HashFile returns the SHA-256 of the contents of path.
func HashFile(path string) ([32]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return [32]byte{}, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return [32]byte{}, err
	}
	var sum [32]byte
	h.Sum(sum[:0])
	return sum, nil
}
