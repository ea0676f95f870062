// Package revname converts between IP addresses and their reverse DNS names
// (RFC 1035 in-addr.arpa. and RFC 3596 ip6.arpa.), as used by AMT relay
// discovery (RFC 8777), where the owner name of an AMTRELAY record is the
// reverse name of the multicast source.
//
// Parse runs once per query, so it neither allocates nor lower-cases the
// name: it works on the string miekg/dns hands over, in whatever letter case
// the client chose (0x20 randomization), and returns the leading labels as a
// substring of that input.
package revname

import "net/netip"

const (
	v4Suffix = "in-addr.arpa"
	v6Suffix = "ip6.arpa"
	v6Labels = 32
)

// Parse splits qname into the labels in front of a complete reverse name and
// the address that reverse name encodes.
//
// qname is a domain name in presentation form, normally fully qualified (a
// missing final dot is accepted), in any letter case. The reverse part is
// either exactly four decimal labels (0-255, no leading zeros, no signs)
// directly under in-addr.arpa, or exactly 32 single hex digit labels directly
// under ip6.arpa. Everything in front of it is returned unchanged as prefix,
// without the separating dot:
//
//	"12.100.51.198.in-addr.arpa."       -> "",      198.51.100.12
//	"AMT.12.100.51.198.In-Addr.Arpa."   -> "AMT",   198.51.100.12
//	"1.12.100.51.198.in-addr.arpa."     -> "1",     198.51.100.12
//
// Names shorter than a full reverse name, names with an empty label, and
// names with a backslash escape in the reverse part report ok == false.
// Escapes in the prefix are left alone; they only matter for finding where
// the prefix ends.
//
// An ip6.arpa name of an IPv4-mapped address yields the 16-byte mapped
// address; whether it means the IPv4 source is the caller's policy.
func Parse(qname string) (prefix string, src netip.Addr, ok bool) {
	name := qname
	if n := len(name); n > 0 && name[n-1] == '.' {
		// An escaped final dot is part of the last label, and that label
		// then cannot be "arpa"; the suffix check below rejects it.
		name = name[:n-1]
	}

	var start int // index of the first byte of the reverse part
	switch {
	case hasSuffixFold(name, v4Suffix):
		rest := name[:len(name)-len(v4Suffix)]
		if len(rest) == 0 || rest[len(rest)-1] != '.' {
			return "", netip.Addr{}, false
		}
		start, src, ok = parse4(rest[:len(rest)-1])
	case hasSuffixFold(name, v6Suffix):
		rest := name[:len(name)-len(v6Suffix)]
		if len(rest) == 0 || rest[len(rest)-1] != '.' {
			return "", netip.Addr{}, false
		}
		start, src, ok = parse6(rest[:len(rest)-1])
	}
	if !ok {
		return "", netip.Addr{}, false
	}
	if start == 0 {
		return "", src, true
	}

	// The reverse labels held no backslash, so the byte before start is
	// either a separator or the escaped end of a longer prefix label; in
	// the latter case the reverse part is really shorter than it looked.
	sep := start - 1
	if name[sep] != '.' || escaped(name, sep) {
		return "", netip.Addr{}, false
	}
	prefix = name[:sep]
	if !validPrefix(prefix) {
		return "", netip.Addr{}, false
	}
	return prefix, src, true
}

// parse4 reads the four labels at the end of s (the part in front of
// ".in-addr.arpa"), least significant octet first.
func parse4(s string) (start int, addr netip.Addr, ok bool) {
	var a [4]byte
	end := len(s)
	for i := 3; i >= 0; i-- {
		j := end
		for j > 0 && s[j-1] != '.' {
			j--
		}
		v, ok := octet(s[j:end])
		if !ok {
			return 0, netip.Addr{}, false
		}
		// Reverse names list the octets back to front.
		a[3-i] = v
		if i > 0 {
			if j == 0 {
				return 0, netip.Addr{}, false
			}
			end = j - 1
		} else {
			start = j
		}
	}
	return start, netip.AddrFrom4(a), true
}

// octet accepts the canonical decimal spelling of 0-255 only, so that every
// address has exactly one reverse name and "012" cannot pass for 12 (or 10,
// if someone reads it as octal).
func octet(l string) (byte, bool) {
	switch {
	case len(l) == 0 || len(l) > 3:
		return 0, false
	case len(l) > 1 && l[0] == '0':
		return 0, false
	}
	v := 0
	for i := 0; i < len(l); i++ {
		c := l[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + int(c-'0')
	}
	if v > 255 {
		return 0, false
	}
	return byte(v), true
}

// parse6 reads the 32 nibble labels at the end of s (the part in front of
// ".ip6.arpa"), least significant nibble first.
func parse6(s string) (start int, addr netip.Addr, ok bool) {
	// 32 labels of one digit each take 63 bytes; walking backwards in
	// steps of two keeps the loop free of label scanning.
	const need = 2*v6Labels - 1
	if len(s) < need {
		return 0, netip.Addr{}, false
	}
	start = len(s) - need
	var a [16]byte
	for k := 0; k < v6Labels; k++ {
		pos := len(s) - 1 - 2*k
		if k > 0 && s[pos+1] != '.' {
			return 0, netip.Addr{}, false
		}
		v, ok := nibble(s[pos])
		if !ok {
			return 0, netip.Addr{}, false
		}
		// Label k from the right is nibble k of the address, high first.
		if k%2 == 0 {
			a[k/2] = v << 4
		} else {
			a[k/2] |= v
		}
	}
	return start, netip.AddrFrom16(a), true
}

func nibble(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// InZone reports whether name is zone or below it: what dns.IsSubDomain(zone, name) answers, without
// allocating. zone must be a lower-case FQDN; name's ASCII letters compare in either case, and the
// part of name before zone must end on an unescaped dot.
func InZone(name, zone string) bool {
	if !hasSuffixFold(name, zone) {
		return false
	}
	if zone == "." || len(name) == len(zone) {
		return true
	}
	sep := len(name) - len(zone) - 1
	return name[sep] == '.' && !escaped(name, sep)
}

// LastLabel splits prefix, the labels Parse returns in front of a reverse
// name, at its last unescaped dot: front holds the labels before it (""
// when there is one label only) and last the label next to the reverse
// name. Escapes are left as they are: "x\.y.amt" is front "x\.y", last
// "amt", and "x\.amt" is the single label "x.amt".
func LastLabel(prefix string) (front, last string) {
	for i := len(prefix) - 1; i >= 0; i-- {
		if prefix[i] == '.' && !escaped(prefix, i) {
			return prefix[:i], prefix[i+1:]
		}
	}
	return "", prefix
}

// hasSuffixFold compares ASCII only: strings.EqualFold would also fold
// non-ASCII runes (the Kelvin sign matches "k"), which DNS does not.
func hasSuffixFold(s, suffix string) bool {
	if len(s) < len(suffix) {
		return false
	}
	s = s[len(s)-len(suffix):]
	for i := 0; i < len(suffix); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != suffix[i] {
			return false
		}
	}
	return true
}

// escaped reports whether s[i] is preceded by an odd run of backslashes,
// i.e. whether it is a literal character rather than syntax. Decimal
// escapes (\DDD) end in a digit, so they never affect the count.
func escaped(s string, i int) bool {
	n := 0
	for i > 0 && s[i-1] == '\\' {
		n++
		i--
	}
	return n%2 == 1
}

// validPrefix rejects empty labels and a dangling backslash. It has to skip
// escapes, because "a\..x" is the labels "a." and "x", not an empty label.
func validPrefix(p string) bool {
	if len(p) == 0 {
		return false
	}
	labelLen := 0
	for i := 0; i < len(p); i++ {
		switch p[i] {
		case '\\':
			if i+1 >= len(p) {
				return false
			}
			i++
			labelLen++
		case '.':
			if labelLen == 0 {
				return false
			}
			labelLen = 0
		default:
			labelLen++
		}
	}
	return labelLen > 0
}

// Reverse returns the canonical lower-case, fully qualified reverse name of
// addr: four labels under in-addr.arpa. for IPv4, 32 nibble labels under
// ip6.arpa. for every IPv6 address, IPv4-mapped ones included (they are a
// distinct name in the DNS; unmap first to get the in-addr.arpa. name).
// Zones are ignored. The zero Addr yields "".
func Reverse(addr netip.Addr) string {
	const hexDigits = "0123456789abcdef"
	switch {
	case addr.Is4():
		a := addr.As4()
		// "255.255.255.255.in-addr.arpa." is the longest at 29 bytes.
		b := make([]byte, 0, 29)
		for i := 3; i >= 0; i-- {
			b = appendDecimal(b, a[i])
			b = append(b, '.')
		}
		b = append(b, v4Suffix...)
		b = append(b, '.')
		return string(b)
	case addr.Is6():
		a := addr.As16()
		b := make([]byte, 0, 2*v6Labels+len(v6Suffix)+1)
		for i := 15; i >= 0; i-- {
			b = append(b, hexDigits[a[i]&0xf], '.', hexDigits[a[i]>>4], '.')
		}
		b = append(b, v6Suffix...)
		b = append(b, '.')
		return string(b)
	}
	return ""
}

func appendDecimal(b []byte, v byte) []byte {
	switch {
	case v >= 100:
		return append(b, '0'+v/100, '0'+v/10%10, '0'+v%10)
	case v >= 10:
		return append(b, '0'+v/10, '0'+v%10)
	}
	return append(b, '0'+v)
}
