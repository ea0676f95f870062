package amtrelay

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/amtdns/amtrelay/sign"
	"github.com/amtdns/amtrelay/table"

	"github.com/miekg/dns"
)

// dnssecConfig is what the dnssec and dnssec_peer_keys properties say. Every apex L.<rev(S)> is a
// zone of one name, signed online with this network's keys; other networks that answer for the
// same names on the anycast address sign with theirs, and each network's DNSKEY RRset lists the
// others' public keys too (RFC 8901 model 2), so that a resolver keeps validating when routing
// moves it from one network to another.
type dnssecConfig struct {
	keys         []*sign.Key
	validity     time.Duration
	cacheEntries int // RRsets whose signatures are kept
	peers        peerKeysConfig
}

// peerKeysConfig is where the other networks' public keys are: a file of DNSKEY records.
type peerKeysConfig struct {
	path     string // "" without one
	reload   time.Duration
	corefile string
	line     int
}

// dnskeyTTL is the TTL of the DNSKEY RRset and its signatures. A resolver that holds the RRset of
// a network without the peers' keys fails to validate their answers for this long after routing
// moves it: dnssec_peer_keys is what prevents that, not a short TTL.
const dnskeyTTL = 3600

// peerKeysMaxSize bounds the peer keys file: a few keys per network.
const peerKeysMaxSize = 1 << 20

// peerKeysMax bounds the distinct keys of the peer keys file. Networks hold two to four keys each
// (KSK, ZSK, one of each rolling over), so 64 is room for a dozen networks; and the DNSKEY RRset
// stays one message over TCP with RSA-4096 keys (about 34 KB of the 64 KB), while every DNSKEY
// answer carries, and its signature covers, the whole set.
const peerKeysMax = 64

// parsePeerKeys reads the DNSKEY records of text, in zone-file form; owners and TTLs are ignored
// (the keys are served at every apex), and anything but a DNSKEY that can sign is an error. Each
// key is returned once, in the order first seen.
//
// Directives ($GENERATE, $INCLUDE, $ORIGIN, $TTL) are refused: the file holds DNSKEY records only,
// and one $GENERATE line makes thousands of keys out of a few bytes.
func parsePeerKeys(text, name string) ([]*dns.DNSKEY, error) {
	if err := refuseDirectives(text, name); err != nil {
		return nil, err
	}
	zp := dns.NewZoneParser(strings.NewReader(text), ".", name)
	zp.SetDefaultTTL(dnskeyTTL)
	type rdata struct {
		flags               uint16
		protocol, algorithm uint8
		publicKey           string
	}
	seen := make(map[rdata]bool)
	var keys []*dns.DNSKEY
	for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
		k, isKey := rr.(*dns.DNSKEY)
		if !isKey {
			return nil, fmt.Errorf("%s: %s record where only DNSKEY records go", name, dns.TypeToString[rr.Header().Rrtype])
		}
		if err := sign.CheckDNSKEY(k); err != nil {
			return nil, fmt.Errorf("%s: key %d: %v", name, k.KeyTag(), err)
		}
		id := rdata{k.Flags, k.Protocol, k.Algorithm, k.PublicKey}
		if seen[id] {
			continue
		}
		if len(keys) == peerKeysMax {
			return nil, fmt.Errorf("%s: more than %d distinct keys", name, peerKeysMax)
		}
		seen[id] = true
		keys = append(keys, k)
	}
	if err := zp.Err(); err != nil {
		return nil, err
	}
	return keys, nil
}

// refuseDirectives reports the first line of text that starts with "$": where the zone-file parser
// reads a directive.
func refuseDirectives(text, name string) error {
	for lineNo := 1; text != ""; lineNo++ {
		line, rest, _ := strings.Cut(text, "\n")
		if strings.HasPrefix(line, "$") {
			directive := line[:min(len(line), len("$GENERATE"))]
			if i := strings.IndexAny(directive, " \t\r"); i > 0 {
				directive = directive[:i]
			}
			return fmt.Errorf("%s:%d: %q: directives are not allowed, the file holds DNSKEY records only", name, lineNo, directive)
		}
		text = rest
	}
	return nil
}

// peerKeysFile keeps the peers' keys of an instance in step with their file, read like the
// sources file.
type peerKeysFile struct {
	followedFile
	cfg     peerKeysConfig
	publish func([]*dns.DNSKEY)
}

func newPeerKeysFile(pc peerKeysConfig, publish func([]*dns.DNSKEY)) *peerKeysFile {
	f := &peerKeysFile{cfg: pc, publish: publish}
	f.followedFile = followedFile{
		file:  table.NewSourceFile(pc.path, peerKeysMaxSize),
		every: pc.reload,
		what:  "peer keys",
		apply: f.apply,
	}
	return f
}

// load reads the first version; an error names the Corefile line.
func (f *peerKeysFile) load(ctx context.Context) error {
	if err := f.followedFile.load(ctx); err != nil {
		return lineErr(f.cfg.corefile, f.cfg.line, "dnssec_peer_keys: %s", oneLine(err))
	}
	return nil
}

func (f *peerKeysFile) apply(_ context.Context, text string) (string, error) {
	keys, err := parsePeerKeys(text, f.cfg.path)
	if err != nil {
		return "", err
	}
	f.publish(keys)
	return fmt.Sprintf("%d peer keys", len(keys)), nil
}

// apexTypes lists the types that exist at the apex of a source whose relays (nil for a source in
// no table) and canary are given, now: what an NSEC there says. SOA, NS (when configured) and
// DNSKEY always; A, AAAA and AMTRELAY while a query for them gets records. Under an all_down
// policy that hands the query elsewhere (servfail, fallthrough) the relays' types are listed: a
// resolver that read them as absent would deny what the other server answers.
func (cfg *config) apexTypes(relays []int, canary int, v *view) []uint16 {
	types := []uint16{dns.TypeSOA, dns.TypeDNSKEY}
	if len(cfg.nameservers) > 0 {
		types = append(types, dns.TypeNS)
	}
	if relays == nil {
		return types
	}
	var buf [16]*endpoint
	eps, res := cfg.choose(relays, canary, v, buf[:0])
	if res == resultAllDown && cfg.allDown != allDownServe {
		eps = eps[:0]
		if cfg.allDown != allDownNoData {
			for _, i := range relays {
				eps = append(eps, cfg.relays[i].endpoints...)
			}
		}
	}
	for _, qtype := range []uint16{dns.TypeA, dns.TypeAAAA, dns.TypeAMTRELAY} {
		for _, e := range eps {
			if e.answers(qtype) {
				types = append(types, qtype)
				break
			}
		}
	}
	return types
}

// signReply adds signatures, and for a negative answer the apex's NSEC, to m, the reply to a query
// with the DO bit for a name at or below an apex L.<rev(S)>. Answers at <rev(S)> belong to S's
// reverse zone, which the plugin does not sign.
func (a *AMTRelay) signReply(m *dns.Msg, v *view) error {
	q := m.Question[0]
	kind, apex, src := classify(q.Name, a.cfg.label)
	if kind != nameApex && kind != nameBelow {
		return nil
	}
	now := time.Now()
	signer := a.signer
	if len(m.Answer) > 0 {
		sigs, err := signer.Sign(m.Answer, apex, now)
		if err != nil {
			return err
		}
		for _, s := range sigs {
			m.Answer = append(m.Answer, s)
		}
	}
	if len(m.Ns) == 0 || m.Ns[0].Header().Rrtype != dns.TypeSOA {
		return nil
	}
	soa := m.Ns[0]
	relays, _ := v.relaysFor(src)
	// The NSEC lasts as long as the negative answer may be cached (RFC 9077): the SOA's TTL.
	nsec := sign.NSEC(apex, soa.Header().Ttl, a.cfg.apexTypes(relays, a.cfg.canaryFor(src.Unmap()), v))
	m.Ns = append(m.Ns[:1], nsec)
	for _, rr := range []dns.RR{soa, nsec} {
		sigs, err := signer.Sign([]dns.RR{rr}, apex, now)
		if err != nil {
			return err
		}
		for _, s := range sigs {
			m.Ns = append(m.Ns, s)
		}
	}
	return nil
}

// errDNSSECStacked refuses the dnssec plugin over a block that signs its own answers: it would sign
// them again with the enclosing zone's name and key, which validators reject at every apex.
var errDNSSECStacked = errors.New("the dnssec plugin in this server block would sign amtrelay's answers with the zone's key and name; " +
	"amtrelay signs them itself with its dnssec property: remove one of the two")
