package amt

import (
	"encoding/binary"
	"errors"
	"net/netip"
)

// Port is the IANA-assigned UDP port of AMT relays.
const Port = 2268

// Message types (low nibble of byte 0, RFC 7450 section 5.1).
const (
	typeDiscovery     = 1
	typeAdvertisement = 2
	typeRequest       = 3
	typeQuery         = 4
	typeUpdate        = 5
	typeData          = 6
	typeTeardown      = 7
)

// Wire sizes. An Advertisement carries no address-family field: the family
// is implied by the total length.
const (
	discoveryLen      = 8
	advertisementLen4 = 12
	advertisementLen6 = 24
	requestLen        = 8
	teardownLen       = 30
	// macHeaderLen is the common head of Query and Update: type, flags or
	// reserved, 48-bit MAC and 32-bit request nonce.
	macHeaderLen = 12
	// gatewayFieldsLen is the gateway port and 16-byte IP that end a Query
	// with G set, and a Teardown.
	gatewayFieldsLen = 18
)

// Flag bits of byte 1 (RFC 7450 figures; Wireshark and VLC agree).
const (
	flagP = 0x01 // Request: answer with an MLDv2 (IPv6) query
	flagL = 0x02 // Query: the relay takes no new tunnels or joins
	flagG = 0x01 // Query: gateway port and address follow the IP packet
)

// Sentinel errors returned (possibly wrapped) by the parsers.
var (
	// ErrShort: too few bytes for the message type.
	ErrShort = errors.New("amt: message too short")
	// ErrVersion: the version nibble is not 0, the only version defined.
	ErrVersion = errors.New("amt: unsupported version")
	// ErrType: a well-formed header of a different message type.
	ErrType = errors.New("amt: unexpected message type")
	// ErrLength: an Advertisement that is neither 12 (IPv4) nor 24 (IPv6)
	// bytes long, or a Query, Update or Data message whose parts do not add
	// up to its length.
	ErrLength = errors.New("amt: bad message length")
	// ErrInner: the IP packet carried by a Query, Update or Data message is
	// malformed or not the kind the message must carry.
	ErrInner = errors.New("amt: bad encapsulated packet")
	// ErrChecksum: an encapsulated IGMP, MLD or IPv4 header checksum is
	// wrong.
	ErrChecksum = errors.New("amt: bad encapsulated checksum")
	// ErrFamily: addresses of different families where one is needed, such
	// as an IPv6 group in an IGMPv3 report.
	ErrFamily = errors.New("amt: address family mismatch")
	// ErrTooLarge: the message would not fit in one UDP datagram.
	ErrTooLarge = errors.New("amt: message too large")
)

// MAC is the 48-bit Response MAC of RFC 7450 section 5.1.4.6. A relay
// computes it over the gateway's address, port and request nonce with a
// secret of its own; the gateway only echoes it in Updates and Teardowns.
type MAC [6]byte

// checkHeader validates byte 0. Version is checked before type so that a
// future-version message is reported as such rather than as a type mismatch.
func checkHeader(b []byte, want byte) error {
	if len(b) == 0 {
		return ErrShort
	}
	if b[0]>>4 != 0 {
		return ErrVersion
	}
	if b[0]&0x0f != want {
		return ErrType
	}
	return nil
}

// AppendDiscovery appends an 8-byte Relay Discovery carrying nonce to b.
//
// A relay may silently drop a nonce of 0 (amtrelayd does), so callers that
// want an answer must use a non-zero nonce; the encoder does not enforce it
// so that tests can produce such messages.
func AppendDiscovery(b []byte, nonce uint32) []byte {
	b = append(b, typeDiscovery, 0, 0, 0)
	return binary.BigEndian.AppendUint32(b, nonce)
}

// ParseDiscovery decodes a Relay Discovery. Reserved bits are ignored and
// trailing bytes are allowed, as RFC 7450 asks receivers to ignore reserved
// fields and deployed relays accept both. A zero nonce is returned as is;
// dropping it is the responder's policy, not a decoding error.
func ParseDiscovery(b []byte) (nonce uint32, err error) {
	if err := checkHeader(b, typeDiscovery); err != nil {
		return 0, err
	}
	if len(b) < discoveryLen {
		return 0, ErrShort
	}
	return binary.BigEndian.Uint32(b[4:8]), nil
}

// AppendAdvertisement appends a Relay Advertisement to b: 12 bytes for an
// IPv4 relay, 24 bytes for anything else. An IPv4-mapped IPv6 address is
// kept in its 16-byte form, so it round-trips through ParseAdvertisement.
// The zone of relay is dropped (the wire has no room for it); the zero Addr
// is written as 0.0.0.0 so that the output always has a valid length.
func AppendAdvertisement(b []byte, nonce uint32, relay netip.Addr) []byte {
	b = append(b, typeAdvertisement, 0, 0, 0)
	b = binary.BigEndian.AppendUint32(b, nonce)
	switch {
	case relay.Is4():
		a := relay.As4()
		return append(b, a[:]...)
	case relay.Is6():
		a := relay.As16()
		return append(b, a[:]...)
	default:
		return append(b, 0, 0, 0, 0)
	}
}

// ParseAdvertisement decodes a Relay Advertisement, which must be exactly 12
// (IPv4 relay) or 24 (IPv6 relay) bytes. Anything longer is rejected rather
// than truncated because the length is the only family indicator: accepting
// trailing bytes would make a 24-byte IPv6 message with junk appended
// indistinguishable from garbage. Reserved bits are ignored (RFC 7450).
func ParseAdvertisement(b []byte) (nonce uint32, relay netip.Addr, err error) {
	if err := checkHeader(b, typeAdvertisement); err != nil {
		return 0, netip.Addr{}, err
	}
	switch len(b) {
	case advertisementLen4:
		relay = netip.AddrFrom4([4]byte(b[8:12]))
	case advertisementLen6:
		relay = netip.AddrFrom16([16]byte(b[8:24]))
	default:
		if len(b) < advertisementLen4 {
			return 0, netip.Addr{}, ErrShort
		}
		return 0, netip.Addr{}, ErrLength
	}
	return binary.BigEndian.Uint32(b[4:8]), relay, nil
}

// AppendRequest appends an 8-byte Request carrying nonce to b. With mld set
// the P flag asks the relay for an MLDv2 (IPv6) query instead of an IGMPv3
// (IPv4) one; relays may ignore it (amtrelayd answers with the family of its
// data).
func AppendRequest(b []byte, nonce uint32, mld bool) []byte {
	var flags byte
	if mld {
		flags = flagP
	}
	b = append(b, typeRequest, flags, 0, 0)
	return binary.BigEndian.AppendUint32(b, nonce)
}

// ParseRequest decodes a Request. As with ParseDiscovery, reserved bits are
// ignored and trailing bytes allowed (amtrelayd accepts both; the Linux
// driver drops reserved bits, which AppendRequest never sets).
func ParseRequest(b []byte) (nonce uint32, mld bool, err error) {
	if err := checkHeader(b, typeRequest); err != nil {
		return 0, false, err
	}
	if len(b) < requestLen {
		return 0, false, ErrShort
	}
	return binary.BigEndian.Uint32(b[4:8]), b[1]&flagP != 0, nil
}

// Teardown asks a relay to drop the tunnel of one gateway endpoint (RFC 7450
// section 5.1.7). MAC and Nonce are those of the last Membership Query the
// relay sent to that endpoint, and Gateway is the endpoint as the relay saw
// it, which the gateway learns from a Query with the G flag.
type Teardown struct {
	MAC     MAC
	Nonce   uint32
	Gateway netip.AddrPort
}

// AppendTeardown appends the 30-byte Teardown t to b.
func AppendTeardown(b []byte, t Teardown) []byte {
	b = append(b, typeTeardown, 0)
	b = append(b, t.MAC[:]...)
	b = binary.BigEndian.AppendUint32(b, t.Nonce)
	return appendGatewayFields(b, t.Gateway)
}

// ParseTeardown decodes a Teardown. Trailing bytes are allowed, as for the
// other fixed-size gateway messages.
func ParseTeardown(b []byte) (Teardown, error) {
	if err := checkHeader(b, typeTeardown); err != nil {
		return Teardown{}, err
	}
	if len(b) < teardownLen {
		return Teardown{}, ErrShort
	}
	t := Teardown{Nonce: binary.BigEndian.Uint32(b[8:12]), Gateway: parseGatewayFields(b[12:30])}
	copy(t.MAC[:], b[2:8])
	return t, nil
}

// appendGatewayFields appends a port and a 16-byte address. RFC 7450 writes
// an IPv4 gateway as an IPv4-compatible IPv6 address (96 zero bits, then the
// IPv4 address); the zero AddrPort is written as all zeros.
func appendGatewayFields(b []byte, gw netip.AddrPort) []byte {
	b = binary.BigEndian.AppendUint16(b, gw.Port())
	var a [16]byte
	switch ip := gw.Addr(); {
	case ip.Is4():
		v4 := ip.As4()
		copy(a[12:], v4[:])
	case ip.Is6():
		a = ip.As16()
	}
	return append(b, a[:]...)
}

// parseGatewayFields reads what appendGatewayFields writes. IPv4-mapped
// addresses are read as IPv4 too, in case a relay uses the form every socket
// API produces. Either form with an IPv4 address in 0.0.0.0/8 stays IPv6
// (::, ::1, ::ffff:0.1.2.3): no gateway can have such an IPv4 address, the
// IPv6 loopback must survive, and what is read must write back unchanged.
func parseGatewayFields(b []byte) netip.AddrPort {
	port := binary.BigEndian.Uint16(b[0:2])
	a := netip.AddrFrom16([16]byte(b[2:18]))
	if b[14] != 0 && (a.Is4In6() || [12]byte(b[2:14]) == ([12]byte{})) {
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[14:18])), port)
	}
	return netip.AddrPortFrom(a, port)
}
