package table

import (
	"net/netip"
	"strconv"
	"strings"
	"testing"
)

func TestParsePrefix(t *testing.T) {
	tests := []struct {
		in      string
		want    string // empty: error expected
		errPart string
	}{
		{in: "203.0.113.0/24", want: "203.0.113.0/24"},
		{in: "0.0.0.0/0", want: "0.0.0.0/0"},
		{in: "::/0", want: "::/0"},
		{in: "203.0.113.7", want: "203.0.113.7/32"},
		{in: "203.0.113.7/32", want: "203.0.113.7/32"},
		{in: "2001:db8::", want: "2001:db8::/128"},
		{in: "2001:DB8::/32", want: "2001:db8::/32"},
		{in: "2001:db8::1/128", want: "2001:db8::1/128"},
		// The longest text netip takes, under maxPrefixText.
		{in: "0000:0000:0000:0000:0000:ffff:255.255.255.255/128", want: "255.255.255.255/32"},

		// Mapped prefixes are filed under IPv4.
		{in: "::ffff:0:0/96", want: "0.0.0.0/0"},
		{in: "::ffff:198.51.100.0/120", want: "198.51.100.0/24"},
		{in: "::ffff:198.51.100.7", want: "198.51.100.7/32"},
		{in: "::ffff:198.51.100.7/128", want: "198.51.100.7/32"},
		{in: "::fffe:0:0/95", want: "::fffe:0:0/95"},
		{in: "::/64", want: "::/64"},

		{in: "203.0.113.7/24", errPart: "203.0.113.7/24 has host bits set; did you mean 203.0.113.0/24?"},
		{in: "2001:db8::1/64", errPart: "did you mean 2001:db8::/64?"},
		{in: "::ffff:198.51.100.7/120", errPart: "did you mean ::ffff:198.51.100.0/120?"},
		{in: "fe80::1%eth0", errPart: "zones are not allowed"},
		{in: "fe80::%eth0/64", errPart: "zones cannot be present"},
		{in: "10.0.0.0/33", errPart: "prefix length out of range"},
		{in: "10.0.0.0/", errPart: "bad bits"},
		{in: "10.0.0.0/08", errPart: "bad bits"},
		{in: "/8", errPart: "unable to parse IP"},
		{in: "198.51.10", errPart: "IPv4 address too short"},
		{in: "010.0.0.0/8", errPart: "leading zero"},
		{in: "r1", errPart: "unable to parse IP"},
		{in: "", errPart: "empty prefix"},
		{in: "10.0.0.0/" + strings.Repeat("1", maxPrefixText-8), errPart: "too long to be a prefix"},
		{in: "fe80::1%" + strings.Repeat("e", maxPrefixText-8), errPart: "zones are not allowed"},
		{in: "fe80::1%" + strings.Repeat("e", maxPrefixText-7), errPart: "too long to be a prefix"},
	}
	for _, tc := range tests {
		got, err := ParsePrefix(tc.in)
		if tc.want == "" {
			if err == nil {
				t.Errorf("ParsePrefix(%q) = %v, want error containing %q", tc.in, got, tc.errPart)
			} else if !strings.Contains(err.Error(), tc.errPart) {
				t.Errorf("ParsePrefix(%q) error %q, want it to contain %q", tc.in, err, tc.errPart)
			} else if strings.Contains(err.Error(), "netip.") || strings.Contains(err.Error(), "ParseAddr(") {
				t.Errorf("ParsePrefix(%q) error %q still names netip internals", tc.in, err)
			}
			continue
		}
		if err != nil || got != netip.MustParsePrefix(tc.want) {
			t.Errorf("ParsePrefix(%q) = %v, %v; want %s", tc.in, got, err, tc.want)
		}
	}
}

// TestParsePrefixMessageBounded: whatever the text, the message repeats
// little of it, as a caller puts the message in a log line and may have
// many of them.
func TestParsePrefixMessageBounded(t *testing.T) {
	for _, head := range []string{"", "10.0.0.0/", "1.2.3.4", "2001:db8::", "fe80::1%", "::ffff:"} {
		for _, fill := range []string{"1", "x", ":", "\xff", "é"} {
			for _, n := range []int{maxPrefixText, 4096} {
				s := head + strings.Repeat(fill, n)
				_, err := ParsePrefix(s[:n])
				if err == nil {
					t.Fatalf("ParsePrefix(%q) succeeded", s[:n])
				}
				// Escaped twice over: netip quotes, and so may a log.
				if msg := strconv.Quote(err.Error()); len(msg) > 1024 {
					t.Errorf("ParsePrefix of %d bytes %q...: message of %d bytes", n, s[:16], len(msg))
				}
			}
		}
	}
}
