// Package amt implements the two RFC 7450 (Automatic Multicast Tunneling)
// messages needed to health-check an AMT relay without taking any of its
// tunnel state: Relay Discovery and Relay Advertisement, plus Probe, which
// sends one and waits for the other.
//
// Request/Membership Query probing is deliberately absent: some relays (the
// Linux amt driver) allocate a tunnel per Request, so probing with it would
// consume relay resources.
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
)

// Wire sizes. An Advertisement carries no address-family field: the family
// is implied by the total length.
const (
	discoveryLen      = 8
	advertisementLen4 = 12
	advertisementLen6 = 24
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
	// bytes long.
	ErrLength = errors.New("amt: bad message length")
)

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
