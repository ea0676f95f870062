package amt

import (
	"bytes"
	"encoding/hex"
	"reflect"
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
	// Messages carrying IP packets, and the relay-side ones.
	amtrelaydQuery,
	vecQuery6,
	vecUpdate4,
	vecUpdate6,
	vecData4,
	vecData6,
	"03010000cafebabe",
	"0700010203040506cafebabe0fa0000000000000000000000000c0000201",
	"0700010203040506cafebabe0fa020010db8000000000000000000000001",
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

func FuzzParseRequest(f *testing.F) {
	addSeeds(f, fuzzSeeds...)
	f.Fuzz(func(t *testing.T, b []byte) {
		nonce, mld, err := ParseRequest(b)
		if err != nil {
			if nonce != 0 || mld {
				t.Fatalf("Error %v returned with values %#x, %v", err, nonce, mld)
			}
			return
		}
		// Only P survives of byte 1; trailing bytes are accepted.
		want := canonical(b[:requestLen])
		want[1] = b[1] & flagP
		if got := AppendRequest(nil, nonce, mld); !bytes.Equal(got, want) {
			t.Fatalf("Re-encoding %x gave %x, want %x", b, got, want)
		}
	})
}

func FuzzParseTeardown(f *testing.F) {
	addSeeds(f, fuzzSeeds...)
	f.Fuzz(func(t *testing.T, b []byte) {
		td, err := ParseTeardown(b)
		if err != nil {
			if td != (Teardown{}) {
				t.Fatalf("Error %v returned with %+v", err, td)
			}
			return
		}
		// The gateway address has two IPv4 forms, so compare decoded
		// values rather than bytes.
		wire := AppendTeardown(nil, td)
		if len(wire) != teardownLen {
			t.Fatalf("Re-encoding %+v gave %d bytes", td, len(wire))
		}
		if again, err := ParseTeardown(wire); err != nil || again != td {
			t.Fatalf("Round trip of %x: %+v, %v; want %+v", b, again, err, td)
		}
	})
}

func FuzzParseQuery(f *testing.F) {
	addSeeds(f, fuzzSeeds...)
	f.Fuzz(func(t *testing.T, b []byte) {
		q, err := ParseQuery(b)
		if err != nil {
			if !reflect.DeepEqual(q, Query{}) {
				t.Fatalf("Error %v returned with %+v", err, q)
			}
			return
		}
		again, err := ParseQuery(AppendQuery(nil, q))
		if err != nil || !reflect.DeepEqual(again, q) {
			t.Fatalf("Round trip of %x: %+v, %v; want %+v", b, again, err, q)
		}
	})
}

func FuzzParseUpdate(f *testing.F) {
	addSeeds(f, fuzzSeeds...)
	f.Fuzz(func(t *testing.T, b []byte) {
		u, err := ParseUpdate(b)
		if err != nil {
			if !reflect.DeepEqual(u, Update{}) {
				t.Fatalf("Error %v returned with %+v", err, u)
			}
			return
		}
		wire, err := AppendUpdate(nil, u)
		if err != nil {
			t.Fatalf("Re-encoding %+v: %v", u, err)
		}
		again, err := ParseUpdate(wire)
		if err != nil || !reflect.DeepEqual(again, u) {
			t.Fatalf("Round trip of %x: %+v, %v; want %+v", b, again, err, u)
		}
	})
}

func FuzzParseData(f *testing.F) {
	addSeeds(f, fuzzSeeds...)
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := ParseData(b)
		if err != nil {
			if d.Source.IsValid() || d.Group.IsValid() || d.Payload != nil {
				t.Fatalf("Error %v returned with %+v", err, d)
			}
			return
		}
		wire, err := AppendData(nil, d)
		if err != nil {
			t.Fatalf("Re-encoding %+v: %v", d, err)
		}
		again, err := ParseData(wire)
		if err != nil || again.Source != d.Source || again.Group != d.Group || !bytes.Equal(again.Payload, d.Payload) {
			t.Fatalf("Round trip of %x: %+v, %v; want %+v", b, again, err, d)
		}
	})
}
