package amt

import (
	"encoding/binary"
	"net/netip"
)

// This file holds the IP-level pieces the AMT messages carry: IPv4 and IPv6
// headers, the Internet checksum and the floating-point time codes of IGMPv3
// and MLDv2. Only what AMT needs is here: no fragmentation, no options other
// than Router Alert.

// IP protocol numbers and IPv6 extension headers used below.
const (
	protoHopByHop = 0
	protoIGMP     = 2
	protoUDP      = 17
	protoRouting  = 43
	protoFragment = 44
	protoICMPv6   = 58
	protoDestOpts = 60
)

const (
	ipv4HeaderLen = 20
	ipv6HeaderLen = 40
	// routerAlertV4 is the IPv4 Router Alert option (RFC 2113): type 148,
	// length 4, value 0 ("examine this packet"). IGMPv3 messages carry it.
	routerAlertV4Len = 4
	// hopByHopRALen is an IPv6 Hop-by-Hop header with only Router Alert
	// (RFC 2711, value 0 = MLD) and two bytes of padding. MLDv2 messages
	// carry it.
	hopByHopRALen = 8
	// maxExtHeaders bounds the IPv6 extension-header walk; legitimate
	// packets have one or two.
	maxExtHeaders = 8
	// maxIPLen is the largest IP packet an IPv4 total length or IPv6
	// payload length (plus header) can describe without jumbograms.
	maxIPLen = 0xffff
)

var (
	allHostsV4       = netip.AddrFrom4([4]byte{224, 0, 0, 1})
	igmpv3ReportsV4  = netip.AddrFrom4([4]byte{224, 0, 0, 22})
	allNodesV6       = netip.MustParseAddr("ff02::1")
	mldv2ReportersV6 = netip.MustParseAddr("ff02::16")
)

// sum16 adds b to an Internet checksum accumulator (RFC 1071). A uint32 does
// not overflow for anything up to 64 KiB plus a pseudo-header.
func sum16(acc uint32, b []byte) uint32 {
	for len(b) >= 2 {
		acc += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		acc += uint32(b[0]) << 8
	}
	return acc
}

// fold finishes a checksum: end-around carries, then the one's complement.
func fold(acc uint32) uint16 {
	for acc>>16 != 0 {
		acc = acc&0xffff + acc>>16
	}
	return ^uint16(acc)
}

// pseudoSum is the checksum accumulator of the pseudo-header UDP over IPv4
// and IPv6, and ICMPv6, include (RFC 768, RFC 8200 section 8.1).
func pseudoSum(src, dst netip.Addr, proto uint8, length int) uint32 {
	acc := sum16(0, src.AsSlice())
	acc = sum16(acc, dst.AsSlice())
	return acc + uint32(proto) + uint32(length>>16) + uint32(length&0xffff)
}

// addrOf returns a as the family asked for: IPv4-mapped IPv6 addresses are
// unmapped for IPv4; anything that still does not fit, including the zero
// Addr, becomes the unspecified address, so that encoders never fail on an
// address they only copy.
func addrOf(a netip.Addr, v6 bool) netip.Addr {
	if v6 {
		if a.IsValid() {
			return netip.AddrFrom16(a.As16()) // maps IPv4, drops a zone
		}
		return netip.IPv6Unspecified()
	}
	if a = a.Unmap(); a.Is4() {
		return a
	}
	return netip.IPv4Unspecified()
}

// appendIPv4Header appends an IPv4 header for payloadLen bytes of proto,
// with the Router Alert option if asked. The identification is 0: nothing
// AMT carries is fragmented. src and dst must be IPv4 (see addrOf).
func appendIPv4Header(b []byte, tos, ttl, proto uint8, src, dst netip.Addr, payloadLen int, routerAlert bool) []byte {
	hlen := ipv4HeaderLen
	if routerAlert {
		hlen += routerAlertV4Len
	}
	start := len(b)
	b = append(b, 0x40|byte(hlen/4), tos)
	b = binary.BigEndian.AppendUint16(b, uint16(hlen+payloadLen))
	b = append(b, 0, 0, 0, 0, ttl, proto, 0, 0)
	s, d := src.As4(), dst.As4()
	b = append(b, s[:]...)
	b = append(b, d[:]...)
	if routerAlert {
		b = append(b, 0x94, 0x04, 0, 0)
	}
	binary.BigEndian.PutUint16(b[start+10:], fold(sum16(0, b[start:])))
	return b
}

// appendIPv6Header appends an IPv6 header for payloadLen bytes of next, and
// with routerAlert a Hop-by-Hop header carrying the MLD Router Alert between
// the two. src and dst must be IPv6 (see addrOf).
func appendIPv6Header(b []byte, hopLimit, next uint8, src, dst netip.Addr, payloadLen int, routerAlert bool) []byte {
	first := next
	if routerAlert {
		first = protoHopByHop
		payloadLen += hopByHopRALen
	}
	b = append(b, 0x60, 0, 0, 0)
	b = binary.BigEndian.AppendUint16(b, uint16(payloadLen))
	b = append(b, first, hopLimit)
	b = append(b, src.AsSlice()...)
	b = append(b, dst.AsSlice()...)
	if routerAlert {
		b = append(b, next, 0, 0x05, 0x02, 0, 0, 0x01, 0x00)
	}
	return b
}

// ipPacket is what parseIP reads from an encapsulated IP packet.
type ipPacket struct {
	v6       bool
	src, dst netip.Addr
	// proto is the upper-layer protocol: for IPv6, the Next Header after
	// the extension headers that were skipped.
	proto uint8
	// payload is the upper-layer part, bounded by the header's length
	// field; bytes after the packet are not in it.
	payload []byte
	// length is the whole packet's length according to its header.
	length int
	// fragment is set for any IPv4 fragment and for IPv6 packets with a
	// Fragment header (proto is then protoFragment).
	fragment bool
	// headerOK is false for an IPv4 header with a bad checksum (always
	// true for IPv6, which has none).
	headerOK bool
}

// parseIP reads the IP packet at the start of b. It checks what every use
// needs (version, lengths within b) and reports the rest for the caller to
// judge.
func parseIP(b []byte) (ipPacket, error) {
	if len(b) == 0 {
		return ipPacket{}, ErrInner
	}
	switch b[0] >> 4 {
	case 4:
		return parseIPv4(b)
	case 6:
		return parseIPv6(b)
	}
	return ipPacket{}, ErrInner
}

func parseIPv4(b []byte) (ipPacket, error) {
	if len(b) < ipv4HeaderLen {
		return ipPacket{}, ErrInner
	}
	hlen := int(b[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(b[2:4]))
	if hlen < ipv4HeaderLen || total < hlen || total > len(b) {
		return ipPacket{}, ErrInner
	}
	frag := binary.BigEndian.Uint16(b[6:8])
	return ipPacket{
		src:      netip.AddrFrom4([4]byte(b[12:16])),
		dst:      netip.AddrFrom4([4]byte(b[16:20])),
		proto:    b[9],
		payload:  b[hlen:total],
		length:   total,
		fragment: frag&0x3fff != 0, // MF or a fragment offset
		headerOK: fold(sum16(0, b[:hlen])) == 0,
	}, nil
}

func parseIPv6(b []byte) (ipPacket, error) {
	if len(b) < ipv6HeaderLen {
		return ipPacket{}, ErrInner
	}
	total := ipv6HeaderLen + int(binary.BigEndian.Uint16(b[4:6]))
	if total > len(b) {
		return ipPacket{}, ErrInner
	}
	p := ipPacket{
		v6:       true,
		src:      netip.AddrFrom16([16]byte(b[8:24])),
		dst:      netip.AddrFrom16([16]byte(b[24:40])),
		length:   total,
		headerOK: true,
	}
	next, rest := b[6], b[ipv6HeaderLen:total]
	for range maxExtHeaders {
		switch next {
		case protoHopByHop, protoRouting, protoDestOpts:
			if len(rest) < 2 {
				return ipPacket{}, ErrInner
			}
			n := (int(rest[1]) + 1) * 8
			if n > len(rest) {
				return ipPacket{}, ErrInner
			}
			next, rest = rest[0], rest[n:]
			continue
		case protoFragment:
			p.fragment = true
		}
		p.proto, p.payload = next, rest
		return p, nil
	}
	return ipPacket{}, ErrInner
}

// decodeCode8 reads the 8-bit floating-point code of IGMPv3 Max Resp Code
// and IGMPv3/MLDv2 QQIC (RFC 3376 sections 4.1.1 and 4.1.7): values below
// 128 are literal, others are 1|exp(3)|mant(4) = (mant|0x10) << (exp+3).
func decodeCode8(c uint8) uint32 {
	if c < 0x80 {
		return uint32(c)
	}
	return uint32(c&0x0f|0x10) << ((c>>4)&0x07 + 3)
}

// encodeCode8 is the inverse of decodeCode8, rounding down values the code
// cannot represent and saturating at the largest one (31744).
func encodeCode8(v uint32) uint8 {
	if v < 0x80 {
		return uint8(v)
	}
	for exp := range uint32(8) {
		if m := v >> (exp + 3); m < 0x20 {
			return 0x80 | uint8(exp)<<4 | uint8(m&0x0f)
		}
	}
	return 0xff
}

// decodeCode16 reads MLDv2's 16-bit Maximum Response Code (RFC 3810 section
// 5.1.3): literal below 32768, else 1|exp(3)|mant(12) = (mant|0x1000) <<
// (exp+3).
func decodeCode16(c uint16) uint32 {
	if c < 0x8000 {
		return uint32(c)
	}
	return uint32(c&0x0fff|0x1000) << ((c>>12)&0x07 + 3)
}

// encodeCode16 is the inverse of decodeCode16, rounding down and saturating
// like encodeCode8.
func encodeCode16(v uint32) uint16 {
	if v < 0x8000 {
		return uint16(v)
	}
	for exp := range uint32(8) {
		if m := v >> (exp + 3); m < 0x2000 {
			return 0x8000 | uint16(exp)<<12 | uint16(m&0x0fff)
		}
	}
	return 0xffff
}
