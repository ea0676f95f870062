package amt

import (
	"bytes"
	"encoding/hex"
	"errors"
	"net/netip"
	"reflect"
	"testing"
	"time"
)

// amtrelaydQuery is the 48-byte Membership Query amtrelayd 6131a69 sent for
// Request 03000000cafebabe (protocol.md section 2.4).
const amtrelaydQuery = "0400" + "97445cca55cd" + "cafebabe" +
	"46000024" + "4567" + "0000" + "01" + "02" + "806a" + "7f000001" + "e0000001" + "94040000" +
	"11" + "10" + "ecdb" + "00000000" + "02" + "14" + "0000"

// The vectors below were produced by the encoders and their checksums,
// lengths and fixed fields checked by a separate Python implementation, so
// that a wrong checksum rule cannot pass by agreeing with itself.
const (
	// ALLOW_NEW_SOURCES 232.1.1.1 from 100.127.1.10, with the MAC and nonce
	// of protocol.md section 2.6.
	vecUpdate4 = "05006796836cfc7e7470ddea" +
		"46c0002c00000000010243f600000000e0000016" + "94040000" +
		"22008a7100000001" + "05000001e8010101647f010a"
	// BLOCK_OLD_SOURCES ff3e::8000:1 from 2001:db8::10.
	vecUpdate6 = "0500010203040506" + "00000001" +
		"6000000000340001" + "00000000000000000000000000000000" + "ff020000000000000000000000000016" +
		"3a00050200000100" +
		"8f00be7400000001" + "06000001ff3e0000000000000000000080000001" + "20010db8000000000000000000000010"
	// MLDv2 general query from fe80::1, Max Resp 1 s, QRV 2, QQI 20 s.
	vecQuery6 = "0400010203040506" + "00000002" +
		"6000000000240001" + "fe800000000000000000000000000001" + "ff020000000000000000000000000001" +
		"3a00050200000100" +
		"82007a2703e80000" + "00000000000000000000000000000000" + "02140000"
	vecData4 = "0600" + "450000210000000040112c41647f010ae8010101" + "13881389000d4665" + "68656c6c6f"
	vecData6 = "0600" + "60000000000d1140" + "20010db8000000000000000000000010" + "ff3e0000000000000000000080000001" +
		"13881389000de7e7" + "68656c6c6f"
)

func TestRequestVectors(t *testing.T) {
	for _, tc := range []struct {
		hex   string
		nonce uint32
		mld   bool
	}{
		{"03000000cafebabe", 0xcafebabe, false},
		{"030000007470ddea", 0x7470ddea, false}, // protocol.md 2.6
		{"03010000cafebabe", 0xcafebabe, true},
	} {
		wire := mustHex(t, tc.hex)
		if got := AppendRequest(nil, tc.nonce, tc.mld); !bytes.Equal(got, wire) {
			t.Errorf("AppendRequest(%#x, %v) = %x, want %s", tc.nonce, tc.mld, got, tc.hex)
		}
		nonce, mld, err := ParseRequest(wire)
		if err != nil || nonce != tc.nonce || mld != tc.mld {
			t.Errorf("ParseRequest(%s) = %#x, %v, %v", tc.hex, nonce, mld, err)
		}
	}
	// Reserved bits around P are ignored; trailing bytes accepted.
	for _, tc := range []struct {
		hex string
		mld bool
	}{{"03fe0000cafebabe", false}, {"03ffffffcafebabe", true}, {"03010000cafebabe00", true}} {
		if _, mld, err := ParseRequest(mustHex(t, tc.hex)); err != nil || mld != tc.mld {
			t.Errorf("ParseRequest(%s) = %v, %v; want %v", tc.hex, mld, err, tc.mld)
		}
	}
	for hexs, want := range map[string]error{
		"":                 ErrShort,
		"03000000cafeba":   ErrShort,
		"13000000cafebabe": ErrVersion,
		"01000000cafebabe": ErrType,
	} {
		if n, mld, err := ParseRequest(mustHex(t, hexs)); !errors.Is(err, want) || n != 0 || mld {
			t.Errorf("ParseRequest(%s) = %#x, %v, %v; want %v", hexs, n, mld, err, want)
		}
	}
}

func TestParseQueryAmtrelayd(t *testing.T) {
	q, err := ParseQuery(mustHex(t, amtrelaydQuery))
	if err != nil {
		t.Fatalf("ParseQuery: %v", err)
	}
	want := Query{
		MAC:         MAC{0x97, 0x44, 0x5c, 0xca, 0x55, 0xcd},
		Nonce:       0xcafebabe,
		Querier:     netip.MustParseAddr("127.0.0.1"),
		MaxResponse: 1600 * time.Millisecond, // code 0x10 = 16 tenths
		QRV:         2,
		QQI:         20 * time.Second,
	}
	if !reflect.DeepEqual(q, want) {
		t.Errorf("Parsed %+v\nwant   %+v", q, want)
	}
	// Our encoding differs only in TOS and IP identification (and so in
	// the header checksum), which nothing reads.
	mine := AppendQuery(nil, q)
	if len(mine) != 48 {
		t.Errorf("AppendQuery gave %d bytes, want 48 like amtrelayd", len(mine))
	}
	orig := mustHex(t, amtrelaydQuery)
	for _, off := range []int{12 + 1, 12 + 4, 12 + 5, 12 + 10, 12 + 11} {
		orig[off], mine[off] = 0, 0
	}
	if !bytes.Equal(mine, orig) {
		t.Errorf("AppendQuery = %x\nwant (masked) %x", mine, orig)
	}
}

func TestQueryMLDVector(t *testing.T) {
	q := Query{
		MAC: MAC{1, 2, 3, 4, 5, 6}, Nonce: 2, MLD: true, Querier: netip.MustParseAddr("fe80::1"),
		MaxResponse: time.Second, QRV: 2, QQI: 20 * time.Second,
	}
	wire := mustHex(t, vecQuery6)
	if got := AppendQuery(nil, q); !bytes.Equal(got, wire) {
		t.Errorf("AppendQuery = %x\nwant          %x", got, wire)
	}
	got, err := ParseQuery(wire)
	if err != nil || !reflect.DeepEqual(got, q) {
		t.Errorf("ParseQuery = %+v, %v; want %+v", got, err, q)
	}
}

func TestQueryFlagsAndGateway(t *testing.T) {
	base := Query{MAC: MAC{9, 8, 7, 6, 5, 4}, Nonce: 7, Querier: netip.MustParseAddr("192.0.2.1"), QRV: 2, QQI: 125 * time.Second}
	for _, tc := range []struct {
		name     string
		limit    bool
		gw       string
		flags    byte
		wantTail string // hex of the gateway fields, "" for none
	}{
		{"plain", false, "", 0x00, ""},
		{"limit", true, "", 0x02, ""},
		{"gateway v4", false, "198.51.100.7:4000", 0x01, "0fa0" + "000000000000000000000000c6336407"},
		{"limit and gateway v6", true, "[2001:db8::7]:65535", 0x03, "ffff" + "20010db8000000000000000000000007"},
		{"gateway ::1 stays IPv6", false, "[::1]:1", 0x01, "0001" + "00000000000000000000000000000001"},
		{"gateway mapped 0/8 stays IPv6", false, "[::ffff:0.48.48.48]:1", 0x01, "0001" + "00000000000000000000ffff00303030"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := base
			q.Limit = tc.limit
			if tc.gw != "" {
				q.Gateway = netip.MustParseAddrPort(tc.gw)
			}
			wire := AppendQuery(nil, q)
			if wire[1] != tc.flags {
				t.Errorf("Flags byte %#02x, want %#02x", wire[1], tc.flags)
			}
			if want := 48 + len(tc.wantTail)/2; len(wire) != want {
				t.Errorf("Length %d, want %d", len(wire), want)
			}
			if tail := hex.EncodeToString(wire[48:]); tail != tc.wantTail {
				t.Errorf("Gateway fields %s, want %s", tail, tc.wantTail)
			}
			got, err := ParseQuery(wire)
			if err != nil || !reflect.DeepEqual(got, q) {
				t.Errorf("ParseQuery = %+v, %v; want %+v", got, err, q)
			}
		})
	}
}

func TestParseQueryGatewayForms(t *testing.T) {
	// IPv4-mapped is read as IPv4 as well as the RFC's IPv4-compatible.
	wire := append(mustHex(t, amtrelaydQuery), mustHex(t, "0fa0"+"00000000000000000000ffffc6336407")...)
	wire[1] |= flagG
	q, err := ParseQuery(wire)
	if want := netip.MustParseAddrPort("198.51.100.7:4000"); err != nil || q.Gateway != want {
		t.Errorf("Gateway = %v, %v; want %v", q.Gateway, err, want)
	}
}

func TestParseQueryErrors(t *testing.T) {
	good := mustHex(t, amtrelaydQuery)
	mod := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	for _, tc := range []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrShort},
		{"header only", good[:12], ErrInner},
		{"truncated IP", good[:40], ErrInner},
		{"version 1", mod(func(b []byte) []byte { b[0] = 0x14; return b }), ErrVersion},
		{"update type", mod(func(b []byte) []byte { b[0] = 0x05; return b }), ErrType},
		{"trailing byte", append(bytes.Clone(good), 0), ErrLength},
		{"G without fields", mod(func(b []byte) []byte { b[1] = flagG; return b }), ErrLength},
		{"G with short fields", append(mod(func(b []byte) []byte { b[1] = flagG; return b }), make([]byte, 17)...), ErrLength},
		{"IGMP checksum", mod(func(b []byte) []byte { b[39] ^= 1; return b }), ErrChecksum},
		{"IPv4 header checksum", mod(func(b []byte) []byte { b[22] ^= 1; return b }), ErrChecksum},
		{"not IGMP", mod(func(b []byte) []byte { b[21] = 17; b[22]++; return b }), ErrInner},
		{"IGMPv3 report", mod(func(b []byte) []byte { b[36] = 0x22; b[38]--; return b }), ErrInner},
		{"IP version 5", mod(func(b []byte) []byte { b[12] = 0x56; return b }), ErrInner},
		{"IHL below 5", mod(func(b []byte) []byte { b[12] = 0x44; return b }), ErrInner},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q, err := ParseQuery(tc.b)
			if !errors.Is(err, tc.want) {
				t.Errorf("ParseQuery = %v, want %v", err, tc.want)
			}
			if !reflect.DeepEqual(q, Query{}) {
				t.Errorf("Error returned with %+v", q)
			}
		})
	}
}

func TestUpdateVectors(t *testing.T) {
	a := netip.MustParseAddr
	for _, tc := range []struct {
		name string
		hex  string
		u    Update
	}{
		{"IGMPv3 join", vecUpdate4, Update{
			MAC: MAC{0x67, 0x96, 0x83, 0x6c, 0xfc, 0x7e}, Nonce: 0x7470ddea, Source: a("0.0.0.0"),
			Records: []GroupRecord{{Type: AllowNewSources, Group: a("232.1.1.1"), Sources: []netip.Addr{a("100.127.1.10")}}},
		}},
		{"MLDv2 leave", vecUpdate6, Update{
			MAC: MAC{1, 2, 3, 4, 5, 6}, Nonce: 1, MLD: true, Source: a("::"),
			Records: []GroupRecord{{Type: BlockOldSources, Group: a("ff3e::8000:1"), Sources: []netip.Addr{a("2001:db8::10")}}},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wire := mustHex(t, tc.hex)
			u := tc.u
			u.Source = netip.Addr{} // the zero Addr is written as unspecified
			got, err := AppendUpdate(nil, u)
			if err != nil || !bytes.Equal(got, wire) {
				t.Errorf("AppendUpdate = %x, %v\nwant           %s", got, err, tc.hex)
			}
			parsed, err := ParseUpdate(wire)
			if err != nil || !reflect.DeepEqual(parsed, tc.u) {
				t.Errorf("ParseUpdate = %+v, %v\nwant          %+v", parsed, err, tc.u)
			}
		})
	}
	// protocol.md 2.6: the Update amtrelayd accepted starts like ours.
	if !bytes.HasPrefix(mustHex(t, vecUpdate4), mustHex(t, "05006796836cfc7e7470ddea46c0002c")) {
		t.Errorf("IPv4 Update does not start like the one amtrelayd accepted")
	}
}

func TestUpdateManyRecords(t *testing.T) {
	a := netip.MustParseAddr
	u := Update{
		MAC: MAC{1}, Nonce: 3, Source: a("10.0.0.1"),
		Records: []GroupRecord{
			{Type: ModeIsInclude, Group: a("232.0.0.1"), Sources: []netip.Addr{a("10.0.0.1"), a("10.0.0.2")}},
			{Type: ChangeToInclude, Group: a("232.0.0.2")},
			{Type: RecordType(9), Group: a("232.0.0.3"), Sources: []netip.Addr{a("10.0.0.3")}},
		},
	}
	wire, err := AppendUpdate(nil, u)
	if err != nil {
		t.Fatalf("AppendUpdate: %v", err)
	}
	got, err := ParseUpdate(wire)
	if err != nil || !reflect.DeepEqual(got, u) {
		t.Errorf("Round trip = %+v, %v; want %+v", got, err, u)
	}
}

func TestParseUpdateAuxData(t *testing.T) {
	// One record with one word of aux data, then a second record: the
	// parser must skip the aux data to find the second one.
	a := netip.MustParseAddr
	u := Update{MAC: MAC{1}, Nonce: 1, Source: a("0.0.0.0"), Records: []GroupRecord{
		{Type: AllowNewSources, Group: a("232.0.0.1"), Sources: []netip.Addr{a("10.0.0.1")}},
		{Type: AllowNewSources, Group: a("232.0.0.2"), Sources: []netip.Addr{a("10.0.0.2")}},
	}}
	wire, _ := AppendUpdate(nil, u)
	// Insert 4 aux bytes after the first record and fix lengths and sums.
	const rec1End = 12 + 24 + 8 + 12
	wire = append(wire[:rec1End:rec1End], append([]byte{0xde, 0xad, 0xbe, 0xef}, wire[rec1End:]...)...)
	wire[12+24+8+1] = 1 // aux data length in words
	wire[12+3]++        // IPv4 total length: 4 more bytes
	wire[12+3]++
	wire[12+3]++
	wire[12+3]++
	refreshSums(wire[12:], 24)
	got, err := ParseUpdate(wire)
	if err != nil || !reflect.DeepEqual(got, u) {
		t.Errorf("ParseUpdate with aux data = %+v, %v", got, err)
	}
}

// refreshSums recomputes the IPv4 header and IGMP checksums of ip.
func refreshSums(ip []byte, hlen int) {
	ip[10], ip[11] = 0, 0
	s := fold(sum16(0, ip[:hlen]))
	ip[10], ip[11] = byte(s>>8), byte(s)
	ip[hlen+2], ip[hlen+3] = 0, 0
	s = fold(sum16(0, ip[hlen:]))
	ip[hlen+2], ip[hlen+3] = byte(s>>8), byte(s)
}

func TestAppendUpdateErrors(t *testing.T) {
	a := netip.MustParseAddr
	for name, u := range map[string]Update{
		"IPv6 group in IGMP":   {Records: []GroupRecord{{Group: a("ff3e::1")}}},
		"IPv4 source in MLD":   {MLD: true, Records: []GroupRecord{{Group: a("ff3e::1"), Sources: []netip.Addr{a("10.0.0.1")}}}},
		"zero group":           {Records: []GroupRecord{{}}},
		"IPv4 group in MLD":    {MLD: true, Records: []GroupRecord{{Group: a("232.1.1.1")}}},
		"invalid source in v4": {Records: []GroupRecord{{Group: a("232.1.1.1"), Sources: []netip.Addr{{}}}}},
	} {
		if b, err := AppendUpdate([]byte{0xaa}, u); !errors.Is(err, ErrFamily) || !bytes.Equal(b, []byte{0xaa}) {
			t.Errorf("%s: AppendUpdate = %x, %v; want the input back and ErrFamily", name, b, err)
		}
	}
	huge := Update{Records: []GroupRecord{{Group: a("232.1.1.1"), Sources: make([]netip.Addr, 20000)}}}
	for i := range huge.Records[0].Sources {
		huge.Records[0].Sources[i] = a("10.0.0.1")
	}
	if _, err := AppendUpdate(nil, huge); !errors.Is(err, ErrTooLarge) {
		t.Errorf("20000 sources: %v, want ErrTooLarge", err)
	}
}

func TestParseUpdateErrors(t *testing.T) {
	good := mustHex(t, vecUpdate4)
	mod := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	for _, tc := range []struct {
		name string
		b    []byte
		want error
	}{
		{"short", good[:11], ErrShort},
		{"query type", mod(func(b []byte) []byte { b[0] = 4; return b }), ErrType},
		{"trailing byte", append(bytes.Clone(good), 0), ErrLength},
		{"IGMP checksum", mod(func(b []byte) []byte { b[len(b)-1] ^= 1; return b }), ErrChecksum},
		{"IPv4 header checksum", mod(func(b []byte) []byte { b[12+8] = 2; return b }), ErrChecksum},
		{"record count too high", mod(func(b []byte) []byte {
			b[12+24+7] = 2
			refreshSums(b[12:], 24)
			return b
		}), ErrInner},
		{"source count too high", mod(func(b []byte) []byte {
			b[12+24+8+3] = 2
			refreshSums(b[12:], 24)
			return b
		}), ErrInner},
		{"IGMP query not report", mod(func(b []byte) []byte {
			b[12+24] = 0x11
			refreshSums(b[12:], 24)
			return b
		}), ErrInner},
		{"fragment", mod(func(b []byte) []byte {
			b[12+6] = 0x20 // MF
			refreshSums(b[12:], 24)
			return b
		}), ErrInner},
		{"MLD checksum", mod(func(b []byte) []byte { return append(b[:0], mustHex(t, vecUpdate6[:len(vecUpdate6)-2]+"11")...) }), ErrChecksum},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, err := ParseUpdate(tc.b)
			if !errors.Is(err, tc.want) {
				t.Errorf("ParseUpdate = %v, want %v", err, tc.want)
			}
			if !reflect.DeepEqual(u, Update{}) {
				t.Errorf("Error returned with %+v", u)
			}
		})
	}
}

func TestDataVectors(t *testing.T) {
	for _, tc := range []struct{ name, hex, src, grp string }{
		{"IPv4", vecData4, "100.127.1.10:5000", "232.1.1.1:5001"},
		{"IPv6", vecData6, "[2001:db8::10]:5000", "[ff3e::8000:1]:5001"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := Data{Source: netip.MustParseAddrPort(tc.src), Group: netip.MustParseAddrPort(tc.grp), Payload: []byte("hello")}
			wire := mustHex(t, tc.hex)
			got, err := AppendData(nil, d)
			if err != nil || !bytes.Equal(got, wire) {
				t.Errorf("AppendData = %x, %v\nwant         %s", got, err, tc.hex)
			}
			p, err := ParseData(wire)
			if err != nil || p.Source != d.Source || p.Group != d.Group || string(p.Payload) != "hello" {
				t.Errorf("ParseData = %+v, %v", p, err)
			}
		})
	}
}

func TestParseDataAsRelaysSendIt(t *testing.T) {
	// amtrelayd forwards the sender's packet with the UDP checksum zeroed;
	// relays may also leave padding after the packet. Neither is an error.
	wire := mustHex(t, vecData4)
	wire[2+20+6], wire[2+20+7] = 0, 0
	wire = append(wire, 0, 0, 0)
	d, err := ParseData(wire)
	if err != nil || string(d.Payload) != "hello" {
		t.Errorf("ParseData = %+v, %v", d, err)
	}
	// An IPv6 packet with a Destination Options header before UDP.
	v6 := mustHex(t, vecData6)
	ip := v6[2:]
	ext := []byte{protoUDP, 0, 1, 4, 0, 0, 0, 0}
	withExt := append(append(append([]byte{}, v6[:2+40]...), ext...), ip[40:]...)
	withExt[2+5] += 8            // payload length
	withExt[2+6] = protoDestOpts // next header
	d, err = ParseData(withExt)
	if err != nil || string(d.Payload) != "hello" || d.Group.Port() != 5001 {
		t.Errorf("ParseData with Destination Options = %+v, %v", d, err)
	}
}

func TestParseDataErrors(t *testing.T) {
	good := mustHex(t, vecData4)
	mod := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	for _, tc := range []struct {
		name string
		b    []byte
		want error
	}{
		{"one byte", good[:1], ErrShort},
		{"header only", good[:2], ErrInner},
		{"truncated", good[:len(good)-1], ErrInner},
		{"not UDP", mod(func(b []byte) []byte { b[2+9] = 6; return b }), ErrInner},
		{"fragment", mod(func(b []byte) []byte { b[2+6] = 0x20; return b }), ErrInner},
		{"later fragment", mod(func(b []byte) []byte { b[2+7] = 1; return b }), ErrInner},
		{"UDP length too big", mod(func(b []byte) []byte { b[2+20+5]++; return b }), ErrInner},
		{"UDP length below 8", mod(func(b []byte) []byte { b[2+20+5] = 7; return b }), ErrInner},
		{"IPv6 fragment header", func() []byte {
			b := mustHex(t, vecData6)
			b[2+6] = protoFragment
			return b
		}(), ErrInner},
		{"request type", mod(func(b []byte) []byte { b[0] = 3; return b }), ErrType},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := ParseData(tc.b)
			if !errors.Is(err, tc.want) {
				t.Errorf("ParseData = %v, want %v", err, tc.want)
			}
			if d.Source.IsValid() || d.Group.IsValid() || d.Payload != nil {
				t.Errorf("Error returned with %+v", d)
			}
		})
	}
}

func TestAppendDataErrors(t *testing.T) {
	v4, v6 := netip.MustParseAddrPort("10.0.0.1:1"), netip.MustParseAddrPort("[ff3e::1]:1")
	for name, d := range map[string]Data{
		"mixed":        {Source: v4, Group: v6},
		"zero":         {},
		"mapped and 4": {Source: netip.MustParseAddrPort("[::ffff:10.0.0.1]:1"), Group: netip.MustParseAddrPort("232.1.1.1:1")},
	} {
		if _, err := AppendData(nil, d); !errors.Is(err, ErrFamily) {
			t.Errorf("%s: %v, want ErrFamily", name, err)
		}
	}
	if _, err := AppendData(nil, Data{Source: v4, Group: netip.MustParseAddrPort("232.1.1.1:1"), Payload: make([]byte, 70000)}); !errors.Is(err, ErrTooLarge) {
		t.Errorf("70000-byte payload: %v, want ErrTooLarge", err)
	}
}

func TestTeardownVectors(t *testing.T) {
	for _, tc := range []struct{ hex, gw string }{
		{"0700" + "010203040506" + "cafebabe" + "0fa0" + "000000000000000000000000c0000201", "192.0.2.1:4000"},
		{"0700" + "010203040506" + "cafebabe" + "0fa0" + "20010db8000000000000000000000001", "[2001:db8::1]:4000"},
	} {
		td := Teardown{MAC: MAC{1, 2, 3, 4, 5, 6}, Nonce: 0xcafebabe, Gateway: netip.MustParseAddrPort(tc.gw)}
		wire := mustHex(t, tc.hex)
		if got := AppendTeardown(nil, td); !bytes.Equal(got, wire) || len(got) != 30 {
			t.Errorf("AppendTeardown(%v) = %x, want %s", tc.gw, got, tc.hex)
		}
		if got, err := ParseTeardown(wire); err != nil || got != td {
			t.Errorf("ParseTeardown(%s) = %+v, %v", tc.hex, got, err)
		}
	}
	if _, err := ParseTeardown(mustHex(t, "0700010203040506cafebabe0fa0")); !errors.Is(err, ErrShort) {
		t.Errorf("Short Teardown: %v", err)
	}
}

func TestCodes(t *testing.T) {
	for _, tc := range []struct {
		code uint8
		v    uint32
	}{{0, 0}, {20, 20}, {127, 127}, {0x80, 128}, {0x81, 136}, {0x8f, 248}, {0x90, 256}, {0xff, 31744}} {
		if got := decodeCode8(tc.code); got != tc.v {
			t.Errorf("decodeCode8(%#x) = %d, want %d", tc.code, got, tc.v)
		}
		if got := encodeCode8(tc.v); got != tc.code {
			t.Errorf("encodeCode8(%d) = %#x, want %#x", tc.v, got, tc.code)
		}
	}
	// Rounding down and saturation.
	if c := encodeCode8(135); c != 0x80 {
		t.Errorf("encodeCode8(135) = %#x, want 0x80", c)
	}
	if c := encodeCode8(1 << 20); c != 0xff {
		t.Errorf("encodeCode8(2^20) = %#x, want 0xff", c)
	}
	for c := range 256 {
		if got := encodeCode8(decodeCode8(uint8(c))); got != uint8(c) {
			t.Errorf("Code8 %#x does not round-trip: %#x", c, got)
		}
	}
	for _, c := range []uint16{0, 1000, 0x7fff, 0x8000, 0x8001, 0xabcd, 0xffff} {
		if got := encodeCode16(decodeCode16(c)); got != c {
			t.Errorf("Code16 %#x does not round-trip: %#x", c, got)
		}
	}
	if v := decodeCode16(0x8000); v != 0x1000<<3 {
		t.Errorf("decodeCode16(0x8000) = %d", v)
	}
}
