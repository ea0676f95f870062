package amtrelay

import (
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/amtdns/amtrelay/health"

	"github.com/coredns/caddy"
)

func TestParseDefaults(t *testing.T) {
	c := caddy.NewTestController("dns", `amtrelay {
		relay r1 192.0.2.1
		source 198.51.100.0/24 r1
	}`)
	c.ServerBlockKeys = []string{"in-addr.arpa.", "ip6.arpa."}
	cfg, err := parse(c)
	if err != nil {
		t.Fatalf("Unexpected error: %v", err)
	}
	if got := strings.Join(cfg.zones, " "); got != "in-addr.arpa. ip6.arpa." {
		t.Errorf("Expected the server block's zones, got %q", got)
	}
	if cfg.label != "amt" || cfg.ttl != 30 || cfg.allDown != allDownServe {
		t.Errorf("Expected label amt, ttl 30, all_down serve; got %q %d %d", cfg.label, cfg.ttl, cfg.allDown)
	}
	want := healthCheck{interval: 5 * time.Second, timeout: time.Second, policy: health.Policy{Fails: 3, Rises: 2}}
	if cfg.health != want {
		t.Errorf("Expected health defaults %+v, got %+v", want, cfg.health)
	}
	r := cfg.relays[0]
	if r.precedence != 0 || r.discoveryOptional || !r.probe.isZero() || len(r.endpoints) != 1 {
		t.Errorf("Unexpected relay defaults: %+v", r)
	}
	if cfg.serial == 0 {
		t.Errorf("Expected a non-zero SOA serial")
	}
}

func TestParseFull(t *testing.T) {
	c := caddy.NewTestController("dns", `amtrelay 100.51.198.in-addr.arpa 8.b.d.0.1.0.0.2.ip6.arpa {
		relay far 192.0.2.9 precedence 20
		relay near 192.0.2.1 2001:db8::1 precedence 10 discovery_optional probe 127.0.0.1:3000
		relay named Relays.Example.NET precedence 10 probe Probe.Example.NET:2300
		source 198.51.100.0/24 near far
		source 198.51.100.128/25 far
		source 2001:db8::/32 named
		label AMT-dns
		ttl 60
		nameserver ns1.example.net ns2.example.net.
		health_check 2s timeout 500ms fails 4 rises 1 handshake discovery
		canary 198.51.100.0/24 10.0.0.1 232.1.1.1
		canary 2001:db8::/32 2001:db8::99 ff3e::8000:1
		canary 198.51.100.128/25 10.0.0.2 232.1.1.2
		all_down nodata
		fallthrough 100.51.198.in-addr.arpa
	}`)
	cfg, err := parse(c)
	if err != nil {
		t.Fatalf("Unexpected error: %v", err)
	}
	if got := strings.Join(cfg.zones, " "); got != "100.51.198.in-addr.arpa. 8.b.d.0.1.0.0.2.ip6.arpa." {
		t.Errorf("Unexpected zones %q", got)
	}
	var names []string
	for _, r := range cfg.relays {
		names = append(names, r.name)
	}
	if got := strings.Join(names, " "); got != "near named far" {
		t.Errorf("Expected relays sorted by precedence, config order within one, got %q", got)
	}
	near := cfg.relays[0]
	if near.precedence != 10 || !near.discoveryOptional || near.probe != (probeTarget{addr: netip.MustParseAddrPort("127.0.0.1:3000")}) || len(near.endpoints) != 2 {
		t.Errorf("Unexpected relay near: %+v", near)
	}
	named := cfg.relays[1]
	if h := named.endpoints[0].host; h != "relays.example.net." {
		t.Errorf("Expected a lower-case FQDN relay name, got %q", h)
	}
	if named.probe != (probeTarget{host: "probe.example.net.", port: 2300}) {
		t.Errorf("Expected the probe name parsed once, got %+v", named.probe)
	}
	// Endpoints are numbered in answer order, across relays.
	for i, e := range cfg.endpoints {
		if e.id != i || cfg.relays[e.relay.index] != e.relay {
			t.Errorf("Endpoint %d (%s) has id %d, relay index %d", i, e, e.id, e.relay.index)
		}
	}
	if len(cfg.endpoints) != 4 {
		t.Errorf("Expected 4 endpoints, got %d", len(cfg.endpoints))
	}
	if cfg.label != "amt-dns" || cfg.ttl != 60 || cfg.allDown != allDownNoData {
		t.Errorf("Unexpected label/ttl/all_down: %q %d %d", cfg.label, cfg.ttl, cfg.allDown)
	}
	if got := strings.Join(cfg.nameservers, " "); got != "ns1.example.net. ns2.example.net." {
		t.Errorf("Unexpected nameservers %q", got)
	}
	for addr, want := range map[string]string{"198.51.100.200": "198.51.100.128/25", "198.51.100.1": "198.51.100.0/24", "2001:db8::5": "2001:db8::/32", "203.0.113.1": ""} {
		got := ""
		if c := cfg.canaryFor(netip.MustParseAddr(addr)); c >= 0 {
			got = cfg.canaries[c].text
		}
		if got != want {
			t.Errorf("Canary of %s: %q, want %q (the longest prefix)", addr, got, want)
		}
	}
	if cfg.health.interval != 2*time.Second || cfg.health.timeout != 500*time.Millisecond ||
		cfg.health.policy.Fails != 4 || cfg.health.policy.Rises != 1 || cfg.health.handshake != handshakeDiscovery {
		t.Errorf("Unexpected health check %+v", cfg.health)
	}
	if !cfg.fall.Through("1.100.51.198.in-addr.arpa.") {
		t.Errorf("Expected fallthrough for the configured zone")
	}
	ids, ok := cfg.inlineTable.Lookup(netip.MustParseAddr("198.51.100.200"))
	if !ok || len(ids) != 1 || cfg.relays[ids[0]].name != "far" {
		t.Errorf("Expected the /25 to map to far, got %v %v", ids, ok)
	}
	ids, ok = cfg.inlineTable.Lookup(netip.MustParseAddr("198.51.100.1"))
	if !ok || len(ids) != 2 || cfg.relays[ids[0]].name != "near" || cfg.relays[ids[1]].name != "far" {
		t.Errorf("Expected the /24 to map to near then far, got %v %v", ids, ok)
	}
}

func TestParseHealthCheckOff(t *testing.T) {
	c := caddy.NewTestController("dns", `amtrelay {
		relay r1 192.0.2.1
		source 198.51.100.0/24 r1
		health_check off
	}`)
	cfg, err := parse(c)
	if err != nil {
		t.Fatalf("Unexpected error: %v", err)
	}
	if cfg.health.interval != 0 {
		t.Errorf("Expected health checks off, got %+v", cfg.health)
	}
}

// The shortest interval and timeout are accepted.
func TestParseHealthCheckBounds(t *testing.T) {
	c := caddy.NewTestController("dns", `amtrelay {
		relay r1 192.0.2.1
		source 198.51.100.0/24 r1
		health_check 100ms timeout 10ms
	}`)
	cfg, err := parse(c)
	if err != nil {
		t.Fatalf("Unexpected error: %v", err)
	}
	if cfg.health.interval != minInterval || cfg.health.timeout != minTimeout {
		t.Errorf("Got %+v", cfg.health)
	}
}

// Without a timeout option a probe gets 1s, or half the interval if that is shorter, as the README
// says; between 1s and 2s it is the half.
func TestParseDefaultTimeout(t *testing.T) {
	for _, tc := range []struct {
		health string
		want   time.Duration
	}{
		{"health_check 100ms", 50 * time.Millisecond},
		{"health_check 500ms", 250 * time.Millisecond},
		{"health_check 1s", 500 * time.Millisecond},
		{"health_check 1500ms", 750 * time.Millisecond},
		{"health_check 1900ms", 950 * time.Millisecond},
		{"health_check 2s", time.Second},
		{"health_check 1m", time.Second},
		{"health_check 1500ms timeout 1s", time.Second},
	} {
		c := caddy.NewTestController("dns", "amtrelay {\nrelay r1 192.0.2.1\nsource 198.51.100.0/24 r1\n"+tc.health+"\n}")
		cfg, err := parse(c)
		if err != nil {
			t.Fatalf("%s: unexpected error: %v", tc.health, err)
		}
		if cfg.health.timeout != tc.want {
			t.Errorf("%s: timeout %v, want %v", tc.health, cfg.health.timeout, tc.want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	const good = "relay r1 192.0.2.1\nsource 198.51.100.0/24 r1\n"
	tests := []struct {
		name  string
		input string
		err   string // substring of the error
		line  int    // the line the error must name, 0 to skip the check
	}{
		{"unknown property", "amtrelay {\n" + good + "bogus 1\n}", `unknown property "bogus"`, 4},
		{"no relay", "amtrelay {\nsource 198.51.100.0/24 r1\n}", "no relay defined", 0},
		{"no source", "amtrelay {\nrelay r1 192.0.2.1\n}", "no source, sources file or bgp defined", 0},
		{"bad zone", "amtrelay exa..mple {\n" + good + "}", "invalid zone", 1},
		{"zone not a CIDR", "amtrelay in-addr.arpa 198.51.100.0/33 {\n" + good + "}", `invalid zone "198.51.100.0/33": a '/' makes it a CIDR prefix`, 1},
		{"zone CIDR without address", "amtrelay /24 {\n" + good + "}", `invalid zone "/24"`, 1},
		{"fallthrough bad zone", "amtrelay {\n" + good + "fallthrough in-addr.arpa exa..mple\n}", `fallthrough: invalid zone "exa..mple"`, 4},
		{"fallthrough not a CIDR", "amtrelay {\n" + good + "fallthrough 198.51.100.0/33\n}", `fallthrough: invalid zone "198.51.100.0/33"`, 4},
		{"explain not a prefix", "amtrelay {\n" + good + "explain localhost\n}", `explain: "localhost"`, 4},
		{"explain host bits", "amtrelay {\n" + good + "explain 127.0.0.1/8\n}", "host bits set; did you mean 127.0.0.0/8?", 4},
		{"explain zone", "amtrelay {\n" + good + "explain fe80::1%eth0\n}", "zones are not allowed", 4},
		{"dnssec_peer_keys without dnssec", "amtrelay {\n" + good + "dnssec_peer_keys peers.keys\nttl 30\n}", "dnssec_peer_keys without dnssec", 4},
		{"relay without address", "amtrelay {\n" + good + "relay r2\n}", "at least one address", 4},
		{"duplicate relay", "amtrelay {\n" + good + "relay r1 192.0.2.2\n}", `relay "r1" defined twice`, 4},
		{"address in two relays", "amtrelay {\n" + good + "relay r2 192.0.2.1\n}", "already belongs to relay", 4},
		{"address twice", "amtrelay {\n" + good + "relay r2 192.0.2.2 192.0.2.2\n}", "listed twice", 4},
		{"bad relay name", "amtrelay {\n" + good + "relay r{2} 192.0.2.2\n}", "relay name", 4},
		{"precedence 300", "amtrelay {\n" + good + "relay r2 192.0.2.2 precedence 300\n}", "precedence \"300\"", 4},
		{"precedence negative", "amtrelay {\n" + good + "relay r2 192.0.2.2 precedence -1\n}", "precedence", 4},
		{"precedence missing value", "amtrelay {\n" + good + "relay r2 192.0.2.2 precedence\n}", "needs a value", 4},
		{"precedence twice", "amtrelay {\n" + good + "relay r2 192.0.2.2 precedence 1 precedence 2\n}", "given twice", 4},
		{"address after options", "amtrelay {\n" + good + "relay r2 192.0.2.2 discovery_optional 192.0.2.3\n}", "list addresses first", 4},
		{"mistyped address", "amtrelay {\n" + good + "relay r2 192.0.2\n}", "neither an IP address", 4},
		{"mistyped v6", "amtrelay {\n" + good + "relay r2 2001:db8:::1\n}", "neither an IP address", 4},
		{"zone in address", "amtrelay {\n" + good + "relay r2 fe80::1%eth0\n}", "zones are not allowed", 4},
		{"mapped address", "amtrelay {\n" + good + "relay r2 ::ffff:192.0.2.2\n}", "write the IPv4 form", 4},
		{"multicast relay", "amtrelay {\n" + good + "relay r2 232.1.1.1\n}", "not a unicast address", 4},
		{"bad probe", "amtrelay {\n" + good + "relay r2 192.0.2.2 probe 127.0.0.1\n}", "probe", 4},
		{"probe port 0", "amtrelay {\n" + good + "relay r2 192.0.2.2 probe 127.0.0.1:0\n}", "port", 4},
		{"probe port too big", "amtrelay {\n" + good + "relay r2 192.0.2.2 probe 127.0.0.1:70000\n}", "port", 4},
		{"source bad prefix", "amtrelay {\n" + good + "source 198.51.100.0/33 r1\n}", "source", 4},
		{"source host bits", "amtrelay {\n" + good + "source 198.51.100.7/24 r1\n}", "host bits", 4},
		{"source no relay", "amtrelay {\n" + good + "source 203.0.113.0/24\n}", "at least one relay", 4},
		{"source unknown relay", "amtrelay {\nrelay r1 192.0.2.1\nsource 198.51.100.0/24 r1 r9\n}", `unknown relay "r9"`, 3},
		{"source duplicate", "amtrelay {\n" + good + "source 198.51.100.0/24 r1\n}", "duplicate", 4},
		{"label with dot", "amtrelay {\n" + good + "label a.b\n}", "single DNS label", 4},
		{"label twice", "amtrelay {\n" + good + "label a\nlabel b\n}", "label given twice", 5},
		{"ttl negative", "amtrelay {\n" + good + "ttl -1\n}", "ttl", 4},
		{"ttl huge", "amtrelay {\n" + good + "ttl 4294967295\n}", "ttl", 4},
		{"ttl no arg", "amtrelay {\n" + good + "ttl\n}", "Wrong argument count", 4},
		{"nameserver none", "amtrelay {\n" + good + "nameserver\n}", "Wrong argument count", 4},
		{"nameserver bad", "amtrelay {\n" + good + "nameserver a..b\n}", "not a domain name", 4},
		{"nameserver twice", "amtrelay {\n" + good + "nameserver ns1.example.net ns2.example.net ns1.example.net.\n}", "nameserver ns1.example.net. listed twice", 4},
		{"nameserver twice in another case", "amtrelay {\n" + good + "nameserver ns1.example.net NS1.Example.Net\n}", "nameserver ns1.example.net. listed twice", 4},
		{"health no args", "amtrelay {\n" + good + "health_check\n}", "Wrong argument count", 4},
		{"health negative interval", "amtrelay {\n" + good + "health_check -5s\n}", "shorter than the minimum 100ms", 4},
		{"health zero interval", "amtrelay {\n" + good + "health_check 0s\n}", "shorter than the minimum 100ms", 4},
		{"health 1ns interval", "amtrelay {\n" + good + "health_check 1ns\n}", "1ns is shorter than the minimum 100ms", 4},
		{"health 99ms interval", "amtrelay {\n" + good + "health_check 99ms\n}", "shorter than the minimum 100ms", 4},
		{"health 9ms timeout", "amtrelay {\n" + good + "health_check 1s timeout 9ms\n}", "9ms is shorter than the minimum 10ms", 4},
		{"health bad interval", "amtrelay {\n" + good + "health_check often\n}", "interval", 4},
		{"health timeout >= interval", "amtrelay {\n" + good + "health_check 1s timeout 1s\n}", "shorter than the interval", 4},
		{"health negative timeout", "amtrelay {\n" + good + "health_check 1s timeout -1s\n}", "shorter than the minimum", 4},
		{"health fails 0", "amtrelay {\n" + good + "health_check 1s fails 0\n}", "fails", 4},
		{"health rises junk", "amtrelay {\n" + good + "health_check 1s rises many\n}", "rises", 4},
		{"health unknown option", "amtrelay {\n" + good + "health_check 1s jitter 1\n}", `unknown option "jitter"`, 4},
		{"health option without value", "amtrelay {\n" + good + "health_check 1s fails\n}", "needs a value", 4},
		{"health off with options", "amtrelay {\n" + good + "health_check off fails 2\n}", "takes no options", 4},
		{"all_down bad", "amtrelay {\n" + good + "all_down maybe\n}", "serve, nodata, servfail or fallthrough", 4},
		{"handshake bad", "amtrelay {\n" + good + "health_check 1s handshake full\n}", `handshake "full": want request or discovery`, 4},
		{"canary args", "amtrelay {\n" + good + "canary 198.51.100.0/24 10.0.0.1\n}", "canary PREFIX SOURCE GROUP", 4},
		{"canary prefix", "amtrelay {\n" + good + "canary 198.51.100.1/24 10.0.0.1 232.1.1.1\n}", "host bits", 4},
		{"canary source", "amtrelay {\n" + good + "canary 198.51.100.0/24 232.0.0.9 232.1.1.1\n}", `source "232.0.0.9" is not a unicast`, 4},
		{"canary ASM group", "amtrelay {\n" + good + "canary 198.51.100.0/24 10.0.0.1 239.1.1.1\n}", `group "239.1.1.1" is not a source-specific`, 4},
		{"canary v6 ASM group", "amtrelay {\n" + good + "canary 198.51.100.0/24 2001:db8::1 ff0e::1\n}", "not a source-specific", 4},
		{"canary families", "amtrelay {\n" + good + "canary 198.51.100.0/24 2001:db8::1 232.1.1.1\n}", "different families", 4},
		{"canary twice", "amtrelay {\n" + good + "canary 198.51.100.0/24 10.0.0.1 232.1.1.1\ncanary 198.51.100.0/24 10.0.0.2 232.1.1.2\n}", "canary for 198.51.100.0/24 given twice", 5},
		{"canary without health checks", "amtrelay {\n" + good + "canary 198.51.100.0/24 10.0.0.1 232.1.1.1\nhealth_check off\n}", "canary needs health checks", 4},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := caddy.NewTestController("dns", tc.input)
			c.ServerBlockKeys = []string{"in-addr.arpa."}
			cfg, err := parse(c)
			if err == nil {
				t.Fatalf("Expected an error containing %q, got config %+v", tc.err, cfg)
			}
			if !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("Expected an error containing %q, got %q", tc.err, err)
			}
			if tc.line > 0 && !strings.Contains(err.Error(), ":"+strconv.Itoa(tc.line)+" ") {
				t.Errorf("Expected the error to name line %d, got %q", tc.line, err)
			}
		})
	}
}

// A zone or fallthrough argument in CIDR notation stands for the reverse zones it covers.
func TestParseCIDRZones(t *testing.T) {
	c := caddy.NewTestController("dns", `amtrelay 198.51.100.0/25 {
		relay r1 192.0.2.1
		source 198.51.100.0/24 r1
		fallthrough 203.0.113.0/24
	}`)
	cfg, err := parse(c)
	if err != nil {
		t.Fatalf("Unexpected error: %v", err)
	}
	if len(cfg.zones) != 128 || cfg.zones[0] != "0.100.51.198.in-addr.arpa." || cfg.zones[127] != "127.100.51.198.in-addr.arpa." {
		t.Errorf("Expected the 128 reverse zones of 198.51.100.0/25, got %d: %v...", len(cfg.zones), cfg.zones[:min(3, len(cfg.zones))])
	}
	if !cfg.fall.Through("amt.7.113.0.203.in-addr.arpa.") || cfg.fall.Through("amt.7.100.51.198.in-addr.arpa.") {
		t.Errorf("Expected fallthrough in 113.0.203.in-addr.arpa. only, got %v", cfg.fall.Zones)
	}
}

// Clients are matched by their unmapped address, so an IPv4-mapped explain prefix is kept as the
// IPv4 prefix it maps.
func TestParseExplainMappedPrefix(t *testing.T) {
	c := caddy.NewTestController("dns", `amtrelay {
		relay r1 192.0.2.1
		source 198.51.100.0/24 r1
		explain ::ffff:127.0.0.0/104 ::ffff:10.0.0.1 2001:db8::/32
	}`)
	cfg, err := parse(c)
	if err != nil {
		t.Fatalf("Unexpected error: %v", err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("10.0.0.1/32"), netip.MustParsePrefix("2001:db8::/32")}
	if !slices.Equal(cfg.explainFrom, want) {
		t.Errorf("Expected explain prefixes %v, got %v", want, cfg.explainFrom)
	}
}

func TestParseTwoBlocks(t *testing.T) {
	c := caddy.NewTestController("dns", `amtrelay {
		relay r1 192.0.2.1
		source 198.51.100.0/24 r1
	}
	amtrelay {
		relay r1 192.0.2.1
		source 198.51.100.0/24 r1
	}`)
	if _, err := parse(c); err == nil || !strings.Contains(err.Error(), "once") {
		t.Fatalf("Expected a second amtrelay block to be rejected, got %v", err)
	}
}
