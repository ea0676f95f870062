package amt

import (
	"bytes"
	"encoding/hex"
	"errors"
	"net/netip"
	"testing"
)

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("Bad hex %q: %v", s, err)
	}
	return b
}

// Vectors from protocol.md section 2.4 (replayed against amtrelayd there).
func TestDiscoveryVector(t *testing.T) {
	want := mustHex(t, "0100000012345678")
	if got := AppendDiscovery(nil, 0x12345678); !bytes.Equal(got, want) {
		t.Errorf("AppendDiscovery = %x, want %x", got, want)
	}
	nonce, err := ParseDiscovery(want)
	if err != nil || nonce != 0x12345678 {
		t.Errorf("ParseDiscovery(%x) = %#x, %v; want 0x12345678, nil", want, nonce, err)
	}
}

func TestAdvertisementVectors(t *testing.T) {
	tests := []struct {
		hex   string
		nonce uint32
		relay string
	}{
		{"02000000123456787f000001", 0x12345678, "127.0.0.1"},
		{"0200000012345678c000020a", 0x12345678, "192.0.2.10"},
		{"02000000a1b2c3d400000000000000000000000000000001", 0xa1b2c3d4, "::1"},
		// IPv4-mapped stays in its 16-byte form.
		{"020000000000000100000000000000000000ffffc000020a", 1, "::ffff:192.0.2.10"},
	}
	for _, tc := range tests {
		wire := mustHex(t, tc.hex)
		relay := netip.MustParseAddr(tc.relay)
		if got := AppendAdvertisement(nil, tc.nonce, relay); !bytes.Equal(got, wire) {
			t.Errorf("AppendAdvertisement(%#x, %v) = %x, want %x", tc.nonce, relay, got, wire)
		}
		nonce, got, err := ParseAdvertisement(wire)
		if err != nil || nonce != tc.nonce || got != relay {
			t.Errorf("ParseAdvertisement(%x) = %#x, %v, %v; want %#x, %v, nil", wire, nonce, got, err, tc.nonce, relay)
		}
	}
}

func TestAppendKeepsPrefix(t *testing.T) {
	prefix := []byte{0xaa, 0xbb}
	b := AppendDiscovery(append([]byte(nil), prefix...), 7)
	if !bytes.Equal(b, mustHex(t, "aabb0100000000000007")) {
		t.Errorf("AppendDiscovery with prefix = %x", b)
	}
	b = AppendAdvertisement(append([]byte(nil), prefix...), 7, netip.MustParseAddr("10.0.0.1"))
	if !bytes.Equal(b, mustHex(t, "aabb02000000000000070a000001")) {
		t.Errorf("AppendAdvertisement with prefix = %x", b)
	}
}

func TestAppendAdvertisementOddAddrs(t *testing.T) {
	// The zone cannot be carried; the zero Addr must still give a valid
	// length rather than a message no parser accepts.
	zoned := netip.MustParseAddr("fe80::1%eth0")
	_, got, err := ParseAdvertisement(AppendAdvertisement(nil, 1, zoned))
	if err != nil || got != zoned.WithZone("") {
		t.Errorf("Zoned round trip = %v, %v; want %v", got, err, zoned.WithZone(""))
	}
	b := AppendAdvertisement(nil, 1, netip.Addr{})
	_, got, err = ParseAdvertisement(b)
	if err != nil || got != netip.IPv4Unspecified() {
		t.Errorf("Zero Addr encodes as %x -> %v, %v; want 0.0.0.0", b, got, err)
	}
}

func TestNonceRoundTrip(t *testing.T) {
	relay := netip.MustParseAddr("198.51.100.7")
	for _, n := range []uint32{0, 1, 0x80000000, 0xdeadbeef, 0xffffffff} {
		d, err := ParseDiscovery(AppendDiscovery(nil, n))
		if err != nil || d != n {
			t.Errorf("Discovery nonce %#x -> %#x, %v", n, d, err)
		}
		a, r, err := ParseAdvertisement(AppendAdvertisement(nil, n, relay))
		if err != nil || a != n || r != relay {
			t.Errorf("Advertisement nonce %#x -> %#x, %v, %v", n, a, r, err)
		}
	}
}

func TestParseDiscoveryLenient(t *testing.T) {
	tests := []struct {
		name, hex string
		nonce     uint32
	}{
		{"trailing bytes", "0100000012345678deadbeef", 0x12345678},
		{"reserved bits set", "01ff000012345678", 0x12345678},
		{"zero nonce", "0100000000000000", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n, err := ParseDiscovery(mustHex(t, tc.hex))
			if err != nil || n != tc.nonce {
				t.Errorf("ParseDiscovery(%s) = %#x, %v; want %#x, nil", tc.hex, n, err, tc.nonce)
			}
		})
	}
}

func TestParseDiscoveryErrors(t *testing.T) {
	tests := []struct {
		name, hex string
		want      error
	}{
		{"empty", "", ErrShort},
		{"short", "01000000", ErrShort},
		{"seven bytes", "01000000123456", ErrShort},
		{"version 1", "1100000012345678", ErrVersion},
		{"version 15", "f100000012345678", ErrVersion},
		{"advertisement", "02000000123456787f000001", ErrType},
		{"request", "03000000cafebabe", ErrType},
		{"type 0", "0000000012345678", ErrType},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n, err := ParseDiscovery(mustHex(t, tc.hex))
			if !errors.Is(err, tc.want) || n != 0 {
				t.Errorf("ParseDiscovery(%s) = %#x, %v; want 0, %v", tc.hex, n, err, tc.want)
			}
		})
	}
}

func TestParseAdvertisementErrors(t *testing.T) {
	tests := []struct {
		name, hex string
		want      error
	}{
		{"empty", "", ErrShort},
		{"header only", "0200000012345678", ErrShort},
		{"eleven bytes", "02000000123456787f0000", ErrShort},
		{"thirteen bytes", "02000000123456787f00000100", ErrLength},
		{"sixteen bytes", "02000000123456787f0000017f000001", ErrLength},
		{"twenty-three bytes", "02000000a1b2c3d4000000000000000000000000000000", ErrLength},
		{"twenty-five bytes", "02000000a1b2c3d40000000000000000000000000000000100", ErrLength},
		{"version 1", "12000000123456787f000001", ErrVersion},
		{"discovery", "0100000012345678", ErrType},
		{"discovery padded to 12", "01000000123456787f000001", ErrType},
		{"query type", "04000000123456787f000001", ErrType},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n, a, err := ParseAdvertisement(mustHex(t, tc.hex))
			if !errors.Is(err, tc.want) || n != 0 || a.IsValid() {
				t.Errorf("ParseAdvertisement(%s) = %#x, %v, %v; want 0, invalid, %v", tc.hex, n, a, err, tc.want)
			}
		})
	}
}

func TestParseAdvertisementIgnoresReserved(t *testing.T) {
	n, a, err := ParseAdvertisement(mustHex(t, "02ffffff123456787f000001"))
	if err != nil || n != 0x12345678 || a != netip.MustParseAddr("127.0.0.1") {
		t.Errorf("Reserved bits set: got %#x, %v, %v", n, a, err)
	}
}

func TestResultString(t *testing.T) {
	want := map[Result]string{
		ResultOK:       "ok",
		ResultTimeout:  "timeout",
		ResultRefused:  "refused",
		ResultBadReply: "bad_reply",
		ResultError:    "error",
		ResultLimit:    "limit",
		ResultNoQuery:  "no_query",
		Result(200):    "Result(200)",
	}
	for r, s := range want {
		if r.String() != s {
			t.Errorf("Result(%d).String() = %q, want %q", uint8(r), r.String(), s)
		}
	}
}

func TestNewNonceNonZero(t *testing.T) {
	seen := make(map[uint32]bool)
	for range 1000 {
		n := newNonce()
		if n == 0 {
			t.Fatalf("NewNonce returned 0")
		}
		seen[n] = true
	}
	// 1000 draws from 2^32 collide with probability ~1e-4; a handful of
	// duplicates would mean the generator is not random at all.
	if len(seen) < 990 {
		t.Errorf("Only %d distinct nonces in 1000 draws", len(seen))
	}
}

func BenchmarkParseAdvertisement(b *testing.B) {
	wire := mustHex(b, "02000000123456787f000001")
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := ParseAdvertisement(wire); err != nil {
			b.Fatal(err)
		}
	}
}
