package amt

import (
	"encoding/binary"
	"net/netip"
	"time"
)

// Query is a Membership Query (RFC 7450 section 5.1.4): the relay's answer
// to a Request, carrying the MAC the gateway must echo and an IGMPv3 or MLDv2
// general query whose timers tell the gateway how often to report.
type Query struct {
	// Limit is the L flag: the relay accepts no new tunnels or joins.
	Limit bool
	MAC   MAC
	// Nonce is the request nonce, echoed from the Request.
	Nonce uint32
	// MLD is true when the encapsulated query is an MLDv2 query in IPv6,
	// false for an IGMPv3 query in IPv4. Relays differ in whether they
	// follow the Request's P flag, so a gateway must accept either.
	MLD bool
	// Querier is the source address of the encapsulated query.
	Querier netip.Addr
	// MaxResponse, QRV and QQI are the general query's Max Resp Code,
	// Querier's Robustness Variable and Querier's Query Interval, decoded.
	MaxResponse time.Duration
	QRV         uint8
	QQI         time.Duration
	// Gateway is the gateway's address and port as the relay saw them,
	// present (valid) only when the relay set the G flag. A gateway behind
	// NAT learns its outside endpoint from it, and a Teardown needs it.
	Gateway netip.AddrPort
}

// Encapsulated query sizes: IGMPv3 (RFC 3376 section 4.1) and MLDv2 (RFC
// 3810 section 5.1) general queries without sources.
const (
	igmpQueryLen = 12
	mldQueryLen  = 28

	igmpTypeQuery    = 0x11
	igmpTypeReportV3 = 0x22
	mldTypeQuery     = 130
	mldTypeReportV2  = 143

	// tosInternetControl is IP precedence 6, which IGMP uses (RFC 3376
	// section 4).
	tosInternetControl = 0xc0
)

// AppendQuery appends q to b. The encapsulated query is a general query
// (group and source list empty) with Router Alert, TTL or hop limit 1, sent
// to 224.0.0.1 or ff02::1, and correct checksums; an IPv4 Query without G is
// 48 bytes long, the size VLC insists on. A Querier of the wrong family is
// written as the unspecified address. Durations are rounded down to what the
// codes can carry.
func AppendQuery(b []byte, q Query) []byte {
	var flags byte
	if q.Limit {
		flags |= flagL
	}
	if q.Gateway.IsValid() {
		flags |= flagG
	}
	b = append(b, typeQuery, flags)
	b = append(b, q.MAC[:]...)
	b = binary.BigEndian.AppendUint32(b, q.Nonce)
	if q.MLD {
		b = appendMLDQuery(b, q)
	} else {
		b = appendIGMPQuery(b, q)
	}
	if q.Gateway.IsValid() {
		b = appendGatewayFields(b, q.Gateway)
	}
	return b
}

func appendIGMPQuery(b []byte, q Query) []byte {
	b = appendIPv4Header(b, tosInternetControl, 1, protoIGMP, addrOf(q.Querier, false), allHostsV4, igmpQueryLen, true)
	start := len(b)
	b = append(b, igmpTypeQuery, encodeCode8(uint32(q.MaxResponse/(100*time.Millisecond))), 0, 0)
	b = append(b, 0, 0, 0, 0) // group: general query
	b = append(b, q.QRV&0x07, encodeCode8(uint32(q.QQI/time.Second)), 0, 0)
	binary.BigEndian.PutUint16(b[start+2:], fold(sum16(0, b[start:])))
	return b
}

func appendMLDQuery(b []byte, q Query) []byte {
	src := addrOf(q.Querier, true)
	b = appendIPv6Header(b, 1, protoICMPv6, src, allNodesV6, mldQueryLen, true)
	start := len(b)
	b = append(b, mldTypeQuery, 0, 0, 0)
	b = binary.BigEndian.AppendUint16(b, encodeCode16(uint32(q.MaxResponse/time.Millisecond)))
	b = append(b, 0, 0)
	b = append(b, make([]byte, 16)...) // group: general query
	b = append(b, q.QRV&0x07, encodeCode8(uint32(q.QQI/time.Second)), 0, 0)
	sum := sum16(pseudoSum(src, allNodesV6, protoICMPv6, mldQueryLen), b[start:])
	binary.BigEndian.PutUint16(b[start+2:], fold(sum))
	return b
}

// ParseQuery decodes a Membership Query. The encapsulated packet must be an
// IGMPv3 or MLDv2 query with valid checksums, and the message must end
// exactly after it, or after the gateway fields when G is set: a gateway
// hands this query to its host stack, which would drop a broken one.
// Reserved bits, Router Alert, TTL and destination are not checked.
func ParseQuery(b []byte) (Query, error) {
	if err := checkHeader(b, typeQuery); err != nil {
		return Query{}, err
	}
	if len(b) < macHeaderLen {
		return Query{}, ErrShort
	}
	p, err := parseIP(b[macHeaderLen:])
	if err != nil {
		return Query{}, err
	}
	tail := b[macHeaderLen+p.length:]
	hasGateway := b[1]&flagG != 0
	if hasGateway && len(tail) != gatewayFieldsLen || !hasGateway && len(tail) != 0 {
		return Query{}, ErrLength
	}
	q := Query{
		Limit:   b[1]&flagL != 0,
		Nonce:   binary.BigEndian.Uint32(b[8:12]),
		MLD:     p.v6,
		Querier: p.src,
	}
	copy(q.MAC[:], b[2:8])
	if p.v6 {
		err = q.parseMLD(p)
	} else {
		err = q.parseIGMP(p)
	}
	if err != nil {
		return Query{}, err
	}
	if hasGateway {
		q.Gateway = parseGatewayFields(tail)
	}
	return q, nil
}

func (q *Query) parseIGMP(p ipPacket) error {
	m := p.payload
	if p.proto != protoIGMP || p.fragment || len(m) < igmpQueryLen || m[0] != igmpTypeQuery {
		return ErrInner
	}
	if !p.headerOK || fold(sum16(0, m)) != 0 {
		return ErrChecksum
	}
	q.MaxResponse = time.Duration(decodeCode8(m[1])) * 100 * time.Millisecond
	q.QRV = m[8] & 0x07
	q.QQI = time.Duration(decodeCode8(m[9])) * time.Second
	return nil
}

func (q *Query) parseMLD(p ipPacket) error {
	m := p.payload
	if p.proto != protoICMPv6 || len(m) < mldQueryLen || m[0] != mldTypeQuery {
		return ErrInner
	}
	if fold(sum16(pseudoSum(p.src, p.dst, protoICMPv6, len(m)), m)) != 0 {
		return ErrChecksum
	}
	q.MaxResponse = time.Duration(decodeCode16(binary.BigEndian.Uint16(m[4:6]))) * time.Millisecond
	q.QRV = m[24] & 0x07
	q.QQI = time.Duration(decodeCode8(m[25])) * time.Second
	return nil
}
