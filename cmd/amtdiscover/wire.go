package main

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/miekg/dns"
)

// This file reads DNS replies without dns.Msg.Unpack: miekg/dns v1.1.73
// switches on the whole second RDATA byte of an AMTRELAY record, D-bit
// included, so a correct record with D=1 fails the whole message with "bad
// rdlength". Replacing its decoder through dns.PrivateHandle would change a
// process-wide table, which the tests share with a CoreDNS server; walking
// the sections here keeps the workaround inside this command. Every other
// type still goes through miekg/dns, one record at a time.

// typeAMTRELAY is RFC 8777's type code; dns.TypeAMTRELAY names it, but the
// constant is kept here so that nothing in this file depends on miekg/dns's
// AMTRELAY support.
const typeAMTRELAY = 260

// Relay types of RFC 8777 section 4.2.3.
const (
	relayNone = 0
	relayIPv4 = 1
	relayIPv6 = 2
	relayName = 3
)

// amtRelay is the RDATA of one AMTRELAY record.
type amtRelay struct {
	Precedence uint8
	D          bool
	Type       uint8
	Addr       netip.Addr // types 1 and 2
	Name       string     // type 3, fully qualified
	// Relay holds the relay field as received, for types this command does
	// not know (4-127) and for malformed records.
	Relay []byte
	// Problem says why the record cannot be used, or what was tolerated in
	// it; empty for a clean record.
	Problem string
	// Usable is false for type 0, unknown types and malformed records.
	Usable bool
}

// noRelay reports a well-formed type 0 record: no relay should be used
// for traffic from the source.
func (r amtRelay) noRelay() bool { return r.Type == relayNone && len(r.Relay) == 0 }

// String is the RFC 8777 presentation form, or the RFC 3597 generic form
// of the whole RDATA when the relay field has no presentation.
func (r amtRelay) String() string {
	d := 0
	if r.D {
		d = 1
	}
	switch {
	case r.noRelay():
		return fmt.Sprintf("%d %d 0 .", r.Precedence, d)
	case (r.Type == relayIPv4 || r.Type == relayIPv6) && r.Addr.IsValid():
		return fmt.Sprintf("%d %d %d %s", r.Precedence, d, r.Type, r.Addr)
	case r.Type == relayName && r.Name != "":
		return fmt.Sprintf("%d %d 3 %s", r.Precedence, d, r.Name)
	}
	raw := append([]byte{r.Precedence, r.Type}, r.Relay...)
	if r.D {
		raw[1] |= 0x80
	}
	return fmt.Sprintf(`\# %d %s`, len(raw), hex.EncodeToString(raw))
}

// parseAMTRelay decodes AMTRELAY RDATA. It fails only when not even the
// precedence and type bytes are there; other defects are reported in
// Problem with Usable false.
func parseAMTRelay(rdata []byte) (amtRelay, error) {
	if len(rdata) < 2 {
		return amtRelay{}, fmt.Errorf("AMTRELAY RDATA of %d bytes", len(rdata))
	}
	r := amtRelay{Precedence: rdata[0], D: rdata[1]&0x80 != 0, Type: rdata[1] & 0x7f}
	relay := rdata[2:]
	bad := func(format string, a ...any) (amtRelay, error) {
		r.Relay = append([]byte(nil), relay...)
		r.Problem = fmt.Sprintf(format, a...)
		r.Usable = false
		return r, nil
	}
	switch r.Type {
	case relayNone:
		if len(relay) != 0 {
			return bad("type 0 with a %d-byte relay field", len(relay))
		}
		r.Problem = "no relay for this source"
	case relayIPv4:
		if len(relay) != 4 {
			return bad("type 1 with a %d-byte relay field", len(relay))
		}
		r.Addr = netip.AddrFrom4([4]byte(relay))
		r.Usable = true
	case relayIPv6:
		if len(relay) != 16 {
			return bad("type 2 with a %d-byte relay field", len(relay))
		}
		r.Addr = netip.AddrFrom16([16]byte(relay))
		r.Usable = true
	case relayName:
		name, rootless, err := readUncompressedName(relay)
		if err != nil {
			return bad("type 3: %v", err)
		}
		r.Name, r.Usable = name, true
		if rootless {
			// Published that way by at least one operator (the RFC's own
			// generic-form example had the same slip); the intent is plain.
			r.Problem = "relay name without its root label, read as fully qualified"
		}
	default:
		return bad("relay type %d is not defined, not used", r.Type)
	}
	return r, nil
}

// readUncompressedName reads a wire-format domain name that must fill b
// exactly. RFC 8777 forbids compression in the relay field, so a pointer
// is an error rather than something to follow. A name that runs to the
// end of b without the root label is accepted and reported.
func readUncompressedName(b []byte) (name string, rootless bool, err error) {
	var labels []string
	off := 0
	for {
		if off == len(b) {
			if len(labels) == 0 {
				return "", false, errors.New("empty relay name")
			}
			rootless = true
			break
		}
		n := int(b[off])
		if n == 0 {
			if off+1 != len(b) {
				return "", false, fmt.Errorf("%d bytes after the relay name", len(b)-off-1)
			}
			break
		}
		if n&0xc0 != 0 {
			return "", false, errors.New("compressed or extended label in the relay name")
		}
		if off+1+n > len(b) {
			return "", false, errors.New("relay name overruns the record")
		}
		labels = append(labels, escapeLabel(b[off+1:off+1+n]))
		off += 1 + n
	}
	if wire := off + 1; wire > 255 {
		return "", false, errors.New("relay name longer than 255 bytes")
	}
	if len(labels) == 0 {
		return "", false, errors.New("empty relay name (the root)")
	}
	return strings.Join(labels, ".") + ".", rootless, nil
}

// escapeLabel gives a label its presentation form (RFC 4343 escapes).
func escapeLabel(l []byte) string {
	var sb strings.Builder
	for _, c := range l {
		switch {
		case c == '.' || c == '\\' || c == '"' || c == '(' || c == ')' || c == ';' || c == '@' || c == '$':
			sb.WriteByte('\\')
			sb.WriteByte(c)
		case c < '!' || c > '~':
			fmt.Fprintf(&sb, "\\%03d", c)
		default:
			sb.WriteByte(c)
		}
	}
	return sb.String()
}

// record is one resource record as received.
type record struct {
	Name  string
	Type  uint16
	Class uint16
	TTL   uint32
	// RR is miekg/dns's decoding, for every type but AMTRELAY; nil if it
	// failed (Raw then holds the RDATA).
	RR dns.RR
	// AMT is the decoding of an AMTRELAY record.
	AMT *amtRelay
	Raw []byte
	// Problem reports a record that could not be decoded.
	Problem string
}

// Data is the RDATA in presentation form.
func (r record) Data() string {
	switch {
	case r.AMT != nil:
		return r.AMT.String()
	case r.RR != nil:
		// miekg/dns prints "owner ttl class type rdata"; the header part
		// is cut off by its own length so that names with tabs survive.
		full := r.RR.String()
		hdr := r.RR.Header().String()
		if strings.HasPrefix(full, hdr) {
			return full[len(hdr):]
		}
		return full
	}
	return fmt.Sprintf(`\# %d %s`, len(r.Raw), hex.EncodeToString(r.Raw))
}

// TypeString is the mnemonic, TYPEnnn for types without one.
func (r record) TypeString() string {
	if r.Type == typeAMTRELAY {
		return "AMTRELAY"
	}
	if s, ok := dns.TypeToString[r.Type]; ok {
		return s
	}
	return fmt.Sprintf("TYPE%d", r.Type)
}

// reply is a DNS response as far as this command needs it.
type reply struct {
	ID        uint16
	Response  bool // QR
	Truncated bool
	AA        bool
	Rcode     int
	QName     string
	QType     uint16
	QClass    uint16
	Answer    []record
	Authority []record
	// Additional records are decoded to find the end of the message but
	// not kept: RFC 8777 gateways look relay names up separately.
}

// parseReply decodes a DNS message. The header and question are checked;
// a record that cannot be decoded is kept with its raw RDATA and a Problem,
// but a message whose structure is broken (counts that overrun it, bad
// names) is an error.
func parseReply(b []byte) (reply, error) {
	if len(b) < 12 {
		return reply{}, fmt.Errorf("short DNS message (%d bytes)", len(b))
	}
	var r reply
	r.ID = binary.BigEndian.Uint16(b)
	flags := binary.BigEndian.Uint16(b[2:])
	r.Response = flags&0x8000 != 0
	r.AA = flags&0x0400 != 0
	r.Truncated = flags&0x0200 != 0
	r.Rcode = int(flags & 0xf)
	qd := int(binary.BigEndian.Uint16(b[4:]))
	counts := [3]int{int(binary.BigEndian.Uint16(b[6:])), int(binary.BigEndian.Uint16(b[8:])), int(binary.BigEndian.Uint16(b[10:]))}
	off := 12
	if qd != 1 {
		return r, fmt.Errorf("%d questions in the reply", qd)
	}
	name, next, err := dns.UnpackDomainName(b, off)
	if err != nil {
		return r, fmt.Errorf("question: %w", err)
	}
	if next+4 > len(b) {
		return r, errors.New("question overruns the message")
	}
	r.QName, r.QType, r.QClass = name, binary.BigEndian.Uint16(b[next:]), binary.BigEndian.Uint16(b[next+2:])
	off = next + 4
	for s := range 3 {
		for range counts[s] {
			rec, next, err := parseRecord(b, off)
			if err != nil {
				if r.Truncated {
					// A truncated reply may end in the middle of a section;
					// what came whole is still worth showing.
					return r, nil
				}
				return r, err
			}
			off = next
			switch s {
			case 0:
				r.Answer = append(r.Answer, rec)
			case 1:
				r.Authority = append(r.Authority, rec)
			}
		}
	}
	return r, nil
}

// parseRecord decodes the record at off and returns the offset after it.
func parseRecord(b []byte, off int) (record, int, error) {
	name, next, err := dns.UnpackDomainName(b, off)
	if err != nil {
		return record{}, 0, fmt.Errorf("record name: %w", err)
	}
	if next+10 > len(b) {
		return record{}, 0, errors.New("record header overruns the message")
	}
	rec := record{
		Name:  name,
		Type:  binary.BigEndian.Uint16(b[next:]),
		Class: binary.BigEndian.Uint16(b[next+2:]),
		TTL:   binary.BigEndian.Uint32(b[next+4:]),
	}
	rdlen := int(binary.BigEndian.Uint16(b[next+8:]))
	start := next + 10
	end := start + rdlen
	if end > len(b) {
		return record{}, 0, errors.New("RDATA overruns the message")
	}
	rec.Raw = b[start:end:end]
	if rec.Type == typeAMTRELAY {
		a, err := parseAMTRelay(rec.Raw)
		if err != nil {
			rec.Problem = err.Error()
		} else {
			rec.AMT = &a
		}
		return rec, end, nil
	}
	// Names inside RDATA may point anywhere before them, so miekg/dns gets
	// the whole message.
	rr, n, err := dns.UnpackRR(b, off)
	switch {
	case err != nil:
		rec.Problem = err.Error()
	case n != end:
		rec.Problem = fmt.Sprintf("RDATA decoded to %d bytes, RDLENGTH says %d", n-start, rdlen)
	default:
		rec.RR = rr
	}
	return rec, end, nil
}
