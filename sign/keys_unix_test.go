//go:build unix

package sign

import (
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// A FIFO or a device where a key file should be is an error at once: opening a FIFO for reading
// would otherwise wait for a writer, and hang start-up or a Corefile reload for good; /dev/zero
// would be read until memory ran out.
func TestLoadKeysNotRegularFiles(t *testing.T) {
	pub, priv := genPair(t, dns.ECDSAP256SHA256, 257)
	for _, tc := range []struct {
		name, ext string
		swap      func(path string) error
		want      string
	}{
		{"fifo key", ".key", func(p string) error { return syscall.Mkfifo(p, 0o600) }, "not a regular file"},
		{"fifo private", ".private", func(p string) error { return syscall.Mkfifo(p, 0o600) }, "not a regular file"},
		{"dev zero private", ".private", func(p string) error { return os.Symlink("/dev/zero", p) }, "not a regular file"},
		{"huge private", ".private", func(p string) error { return os.WriteFile(p, make([]byte, maxKeyFile+1), 0o600) }, "larger than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := writeBIND(t, t.TempDir(), pub, priv)
			path := base + tc.ext
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
			if err := tc.swap(path); err != nil {
				t.Skipf("Cannot make %s: %v", path, err)
			}
			done := make(chan error, 1)
			go func() {
				_, err := LoadKeys([]string{base})
				done <- err
			}()
			select {
			case err := <-done:
				if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path) {
					t.Errorf("LoadKeys: %v, want an error naming %s: %s", err, path, tc.want)
				}
			case <-time.After(5 * time.Second):
				// Let the blocked open go, so that the test can end.
				if w, err := os.OpenFile(path, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
					w.Close()
				}
				t.Fatalf("LoadKeys still blocked after 5s on %s", path)
			}
		})
	}
}
