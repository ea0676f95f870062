package amt

import (
	"encoding/binary"
	"net/netip"
)

// Data is the UDP datagram a Multicast Data message (RFC 7450 section
// 5.1.6) carries: one packet of the (S,G) channel, as the relay received it.
type Data struct {
	// Source is S and the UDP source port.
	Source netip.AddrPort
	// Group is G and the UDP destination port.
	Group netip.AddrPort
	// Payload is the UDP payload. ParseData returns a slice of its input,
	// not a copy.
	Payload []byte
}

const (
	dataHeaderLen = 2 // type and reserved
	udpHeaderLen  = 8
	// dataTTL is the TTL or hop limit AppendData writes. The original is
	// not known to a relay that received the payload on a UDP socket.
	dataTTL = 64
)

// AppendData appends a Multicast Data message carrying d in a complete IPv4
// or IPv6 packet, with a valid UDP checksum (mandatory for IPv6). Source and
// Group must both be IPv4 or both IPv6 (ErrFamily); a payload that cannot
// fit in one IP packet gives ErrTooLarge.
func AppendData(b []byte, d Data) ([]byte, error) {
	src, dst := d.Source.Addr(), d.Group.Addr()
	if !(src.Is4() && dst.Is4() || src.Is6() && dst.Is6()) {
		return b, ErrFamily
	}
	// The IPv4 total length covers the IP header, the IPv6 payload length
	// does not.
	udpLen := udpHeaderLen + len(d.Payload)
	if dst.Is4() && ipv4HeaderLen+udpLen > maxIPLen || udpLen > maxIPLen {
		return b, ErrTooLarge
	}
	b = append(b, typeData, 0)
	if dst.Is4() {
		b = appendIPv4Header(b, 0, dataTTL, protoUDP, src, dst, udpLen, false)
	} else {
		b = appendIPv6Header(b, dataTTL, protoUDP, src, dst, udpLen, false)
	}
	start := len(b)
	b = binary.BigEndian.AppendUint16(b, d.Source.Port())
	b = binary.BigEndian.AppendUint16(b, d.Group.Port())
	b = binary.BigEndian.AppendUint16(b, uint16(udpLen))
	b = append(b, 0, 0)
	b = append(b, d.Payload...)
	sum := fold(sum16(pseudoSum(src, dst, protoUDP, udpLen), b[start:]))
	if sum == 0 {
		sum = 0xffff // 0 means "no checksum" in UDP (RFC 768)
	}
	binary.BigEndian.PutUint16(b[start+6:], sum)
	return b, nil
}

// ParseData decodes a Multicast Data message carrying an unfragmented UDP
// datagram in IPv4 or IPv6; anything else is ErrInner. Checksums are not
// verified: relays rewrite headers (amtrelayd zeroes the IPv4 UDP checksum)
// and the outer UDP checksum already covers the whole message in transit.
// Bytes after the IP packet's stated length are ignored.
func ParseData(b []byte) (Data, error) {
	if err := checkHeader(b, typeData); err != nil {
		return Data{}, err
	}
	if len(b) < dataHeaderLen {
		return Data{}, ErrShort
	}
	p, err := parseIP(b[dataHeaderLen:])
	if err != nil {
		return Data{}, err
	}
	u := p.payload
	if p.proto != protoUDP || p.fragment || len(u) < udpHeaderLen {
		return Data{}, ErrInner
	}
	ulen := int(binary.BigEndian.Uint16(u[4:6]))
	if ulen < udpHeaderLen || ulen > len(u) {
		return Data{}, ErrInner
	}
	return Data{
		Source:  netip.AddrPortFrom(p.src, binary.BigEndian.Uint16(u[0:2])),
		Group:   netip.AddrPortFrom(p.dst, binary.BigEndian.Uint16(u[2:4])),
		Payload: u[udpHeaderLen:ulen],
	}, nil
}
