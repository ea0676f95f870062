package amt

import (
	"bytes"
	"encoding/hex"
	"testing"
)

// canonical returns b with the reserved bytes 1..3 cleared: the parsers
// ignore them (RFC 7450), so the encoders can only give back this form.
func canonical(b []byte) []byte {
	c := bytes.Clone(b)
	copy(c[1:4], []byte{0, 0, 0})
	return c
}

func addSeeds(f *testing.F, seeds ...string) {
	for _, s := range seeds {
		b, err := hex.DecodeString(s)
		if err != nil {
			f.Fatalf("Bad seed %q: %v", s, err)
		}
		f.Add(b)
	}
}

// Seeds: protocol.md section 2.4 vectors plus one of each error class.
var fuzzSeeds = []string{
	"0100000012345678",
	"0100000000000000",
	"01ff000012345678",
	"1100000012345678",
	"01000000",
	"0100000012345678deadbeef",
	"01000000a1b2c3d4",
	"02000000123456787f000001",
	"0200000012345678c000020a",
	"02000000a1b2c3d400000000000000000000000000000001",
	"02000000123456787f00000100",
	"03000000cafebabe",
	"",
}

func FuzzParseAdvertisement(f *testing.F) {
	addSeeds(f, fuzzSeeds...)
	f.Fuzz(func(t *testing.T, b []byte) {
		nonce, relay, err := ParseAdvertisement(b)
		if err != nil {
			if nonce != 0 || relay.IsValid() {
				t.Fatalf("Error %v returned with values %#x, %v", err, nonce, relay)
			}
			return
		}
		if got, want := AppendAdvertisement(nil, nonce, relay), canonical(b); !bytes.Equal(got, want) {
			t.Fatalf("Re-encoding %x gave %x, want %x", b, got, want)
		}
	})
}

func FuzzParseDiscovery(f *testing.F) {
	addSeeds(f, fuzzSeeds...)
	f.Fuzz(func(t *testing.T, b []byte) {
		nonce, err := ParseDiscovery(b)
		if err != nil {
			if nonce != 0 {
				t.Fatalf("Error %v returned with nonce %#x", err, nonce)
			}
			return
		}
		// Trailing bytes are accepted, so only the 8-byte message round-trips.
		if got, want := AppendDiscovery(nil, nonce), canonical(b[:discoveryLen]); !bytes.Equal(got, want) {
			t.Fatalf("Re-encoding %x gave %x, want %x", b, got, want)
		}
	})
}
