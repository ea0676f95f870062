package table

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// mappedPrefix is ::ffff:0:0/96, the IPv4-mapped IPv6 block (RFC 4291 2.5.5.2).
var mappedPrefix = netip.MustParsePrefix("::ffff:0:0/96")

// maxPrefixText is longer than any text netip parses as a prefix, the
// longest being 49 bytes (0000:0000:0000:0000:0000:ffff:255.255.255.255/128).
// Longer text is refused before netip sees it, because netip's messages
// repeat the text, and parts of it again, so that a line of garbage would
// make an error message many times its size.
const maxPrefixText = 64

// ParsePrefix parses a source prefix as written in the Corefile or a sources
// file: CIDR notation, or a bare address meaning a single host (/32 or /128).
//
// A prefix with host bits set is rejected rather than masked, because a
// typo such as 203.0.113.7/24 for 203.0.113.0/24 would otherwise silently
// cover sources the operator did not mean. Zones are rejected: a multicast
// source is identified by its address alone.
//
// A prefix inside ::ffff:0:0/96 is converted to the IPv4 prefix it maps, as
// Lookup looks mapped addresses up in the IPv4 table: that way an operator
// who writes ::ffff:198.51.100.0/120 and one who writes 198.51.100.0/24 get
// the same entry, and a duplicate between the two spellings is caught.
func ParsePrefix(s string) (netip.Prefix, error) {
	if s == "" {
		return netip.Prefix{}, errors.New("empty prefix")
	}
	if len(s) > maxPrefixText {
		return netip.Prefix{}, errors.New("too long to be a prefix")
	}
	var p netip.Prefix
	if strings.IndexByte(s, '/') >= 0 {
		var err error
		p, err = netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, trimNetipErr(err)
		}
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, trimNetipErr(err)
		}
		if a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("%s: zones are not allowed", s)
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	return normalize(p)
}

// normalize validates p and folds IPv4-mapped prefixes into IPv4; every
// prefix entering a Builder goes through it, whether parsed here or built
// by the caller.
func normalize(p netip.Prefix) (netip.Prefix, error) {
	if !p.IsValid() {
		return netip.Prefix{}, errors.New("invalid prefix")
	}
	if m := p.Masked(); m != p {
		return netip.Prefix{}, fmt.Errorf("%s has host bits set; did you mean %s?", p, m)
	}
	if a := p.Addr(); a.Is4In6() && p.Bits() >= mappedPrefix.Bits() {
		return netip.PrefixFrom(a.Unmap(), p.Bits()-mappedPrefix.Bits()), nil
	}
	return p, nil
}

// trimNetipErr drops the "netip.ParsePrefix(INPUT): " style preambles from
// netip's messages; the caller already quotes the input and says where it
// came from, so only the reason is worth keeping.
func trimNetipErr(err error) error {
	msg := err.Error()
	trimmed := true
	for trimmed {
		trimmed = false
		for _, fn := range []string{"netip.ParsePrefix(", "ParseAddr("} {
			if !strings.HasPrefix(msg, fn) {
				continue
			}
			q, qerr := strconv.QuotedPrefix(msg[len(fn):])
			rest := msg[len(fn)+len(q):]
			if qerr == nil && strings.HasPrefix(rest, "): ") {
				msg = rest[3:]
				trimmed = true
			}
		}
	}
	return errors.New(msg)
}
