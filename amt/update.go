package amt

import (
	"encoding/binary"
	"net/netip"
)

// RecordType is the type of a group record in an IGMPv3 or MLDv2 report
// (RFC 3376 section 4.2.12, RFC 3810 section 5.2.12).
type RecordType uint8

// Record types. A gateway joins an (S,G) channel with AllowNewSources and
// leaves it with BlockOldSources. ChangeToInclude with no sources, which
// RFC 3376 also allows for leaving, did not leave the channel on amtrelayd.
const (
	ModeIsInclude   RecordType = 1
	ModeIsExclude   RecordType = 2
	ChangeToInclude RecordType = 3
	ChangeToExclude RecordType = 4
	AllowNewSources RecordType = 5
	BlockOldSources RecordType = 6
)

// GroupRecord is one group record of a membership report.
type GroupRecord struct {
	Type    RecordType
	Group   netip.Addr
	Sources []netip.Addr
}

// Update is a Membership Update (RFC 7450 section 5.1.5): a membership
// report sent through the tunnel, authenticated by the MAC and nonce of a
// Query the relay sent to the same gateway address and port.
type Update struct {
	MAC   MAC
	Nonce uint32
	// MLD selects an MLDv2 report in IPv6 rather than an IGMPv3 report in
	// IPv4; every address in Records must be of that family.
	MLD bool
	// Source is the encapsulated report's IP source. The zero Addr is
	// written as the unspecified address, which RFC 3376 section 4.2.13 and
	// RFC 3810 section 5.2.13 allow for a host without an address on the
	// link (a gateway has none on its tunnel).
	Source  netip.Addr
	Records []GroupRecord
}

// Per-record sizes: type, aux length, source count, then the group.
const (
	igmpReportHeaderLen = 8
	mldReportHeaderLen  = 8
	recordHeaderLen     = 4
)

// AppendUpdate appends u to b: the AMT header, then an IPv4 packet (TOS
// 0xc0, TTL 1, Router Alert, to 224.0.0.22) with an IGMPv3 report, or an
// IPv6 packet (hop limit 1, Hop-by-Hop Router Alert, to ff02::16) with an
// MLDv2 report, checksums filled in. It fails with ErrFamily if a group or
// source is not of the report's family, and with ErrTooLarge if the result
// would not fit in an IP packet.
func AppendUpdate(b []byte, u Update) ([]byte, error) {
	addrLen := 4
	if u.MLD {
		addrLen = 16
	}
	size := igmpReportHeaderLen
	for _, r := range u.Records {
		if !fitsFamily(r.Group, u.MLD) {
			return b, ErrFamily
		}
		for _, s := range r.Sources {
			if !fitsFamily(s, u.MLD) {
				return b, ErrFamily
			}
		}
		if len(r.Sources) > 0xffff {
			return b, ErrTooLarge
		}
		size += recordHeaderLen + addrLen*(1+len(r.Sources))
	}
	// The IPv4 total length counts the whole header, the IPv6 payload
	// length only the Hop-by-Hop header.
	headers := ipv4HeaderLen + routerAlertV4Len
	if u.MLD {
		headers = hopByHopRALen
	}
	if len(u.Records) > 0xffff || headers+size > maxIPLen {
		return b, ErrTooLarge
	}

	b = append(b, typeUpdate, 0)
	b = append(b, u.MAC[:]...)
	b = binary.BigEndian.AppendUint32(b, u.Nonce)
	src := addrOf(u.Source, u.MLD)
	if u.MLD {
		b = appendIPv6Header(b, 1, protoICMPv6, src, mldv2ReportersV6, size, true)
	} else {
		b = appendIPv4Header(b, tosInternetControl, 1, protoIGMP, src, igmpv3ReportsV4, size, true)
	}
	start := len(b)
	reportType := byte(igmpTypeReportV3)
	if u.MLD {
		reportType = mldTypeReportV2
	}
	b = append(b, reportType, 0, 0, 0, 0, 0)
	b = binary.BigEndian.AppendUint16(b, uint16(len(u.Records)))
	for _, r := range u.Records {
		b = append(b, byte(r.Type), 0)
		b = binary.BigEndian.AppendUint16(b, uint16(len(r.Sources)))
		b = append(b, addrOf(r.Group, u.MLD).AsSlice()...)
		for _, s := range r.Sources {
			b = append(b, addrOf(s, u.MLD).AsSlice()...)
		}
	}
	var acc uint32
	if u.MLD {
		acc = pseudoSum(src, mldv2ReportersV6, protoICMPv6, size)
	}
	binary.BigEndian.PutUint16(b[start+2:], fold(sum16(acc, b[start:])))
	return b, nil
}

// fitsFamily reports whether a can be written in a report of that family:
// any IPv6 address (IPv4-mapped ones as their 16 bytes) in an MLDv2 report,
// an IPv4 or IPv4-mapped address in an IGMPv3 one.
func fitsFamily(a netip.Addr, mld bool) bool {
	if mld {
		return a.Is6()
	}
	return a.Unmap().Is4()
}

// ParseUpdate decodes a Membership Update, as a relay must: the encapsulated
// packet must end exactly where the message does (amtrelayd drops it
// otherwise), its IPv4 header and IGMPv3 or MLDv2 checksums must be right
// (hosts and relays drop it otherwise), and every record must fit. Aux data
// is skipped. Record types are returned as they are, known or not.
func ParseUpdate(b []byte) (Update, error) {
	if err := checkHeader(b, typeUpdate); err != nil {
		return Update{}, err
	}
	if len(b) < macHeaderLen {
		return Update{}, ErrShort
	}
	p, err := parseIP(b[macHeaderLen:])
	if err != nil {
		return Update{}, err
	}
	if macHeaderLen+p.length != len(b) {
		return Update{}, ErrLength
	}
	u := Update{Nonce: binary.BigEndian.Uint32(b[8:12]), MLD: p.v6, Source: p.src}
	copy(u.MAC[:], b[2:8])
	m := p.payload
	wantProto, wantType, addrLen := uint8(protoIGMP), byte(igmpTypeReportV3), 4
	var acc uint32
	if p.v6 {
		wantProto, wantType, addrLen = protoICMPv6, mldTypeReportV2, 16
		acc = pseudoSum(p.src, p.dst, protoICMPv6, len(m))
	}
	if p.proto != wantProto || p.fragment || len(m) < igmpReportHeaderLen || m[0] != wantType {
		return Update{}, ErrInner
	}
	if !p.headerOK || fold(sum16(acc, m)) != 0 {
		return Update{}, ErrChecksum
	}
	n := int(binary.BigEndian.Uint16(m[6:8]))
	rest := m[igmpReportHeaderLen:]
	// Every record takes at least recordHeaderLen+addrLen bytes, so this
	// bounds the allocation by the packet's size, not by the count field.
	if n*(recordHeaderLen+addrLen) > len(rest) {
		return Update{}, ErrInner
	}
	u.Records = make([]GroupRecord, 0, n)
	for range n {
		if len(rest) < recordHeaderLen+addrLen {
			return Update{}, ErrInner
		}
		auxLen := int(rest[1]) * 4
		nsrc := int(binary.BigEndian.Uint16(rest[2:4]))
		recLen := recordHeaderLen + addrLen*(1+nsrc) + auxLen
		if recLen > len(rest) {
			return Update{}, ErrInner
		}
		r := GroupRecord{Type: RecordType(rest[0]), Group: addrAt(rest[4:], addrLen)}
		if nsrc > 0 {
			r.Sources = make([]netip.Addr, nsrc)
			for i := range r.Sources {
				r.Sources[i] = addrAt(rest[recordHeaderLen+addrLen*(1+i):], addrLen)
			}
		}
		u.Records = append(u.Records, r)
		rest = rest[recLen:]
	}
	return u, nil
}

// addrAt reads a 4- or 16-byte address at the start of b.
func addrAt(b []byte, n int) netip.Addr {
	if n == 4 {
		return netip.AddrFrom4([4]byte(b[:4]))
	}
	return netip.AddrFrom16([16]byte(b[:16]))
}
