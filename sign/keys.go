package sign

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/amtdns/amtrelay/internal/openfile"
	"github.com/miekg/dns"
)

// Key is one key pair of this network: the public DNSKEY and the private key that signs with it.
// A Key does not change after NewKey; its DNSKEY owner name is whatever the key file said and is
// never served (DNSKEYSet rewrites it to each apex).
type Key struct {
	dnskey dns.DNSKEY
	tag    uint16
	priv   crypto.Signer
	file   string
}

// DNSKEY returns a copy of the public key record, owner as read.
func (k *Key) DNSKEY() *dns.DNSKEY {
	c := k.dnskey
	return &c
}

// Tag is the key tag (RFC 4034 appendix B) of the DNSKEY.
func (k *Key) Tag() uint16 { return k.tag }

// Algorithm is the DNSSEC algorithm number of the key.
func (k *Key) Algorithm() uint8 { return k.dnskey.Algorithm }

// SEP reports whether the key has the Secure Entry Point flag (flags 257): the key the parent's DS
// points at.
func (k *Key) SEP() bool { return k.dnskey.Flags&dns.SEP != 0 }

// Private returns the private key.
func (k *Key) Private() crypto.Signer { return k.priv }

// File is the basename the key was loaded from, or what NewKey was given.
func (k *Key) File() string { return k.file }

func (k *Key) String() string {
	return fmt.Sprintf("%s (tag %d, algorithm %d, flags %d)", k.file, k.tag, k.dnskey.Algorithm, k.dnskey.Flags)
}

// Algorithms that keys may use: those RFC 8624 lets a signer use, and miekg/dns can sign with.
// RSA/SHA-1 is absent on purpose: validators are dropping it.
var supported = map[uint8]bool{
	dns.RSASHA256:       true,
	dns.ECDSAP256SHA256: true,
	dns.ECDSAP384SHA384: true,
	dns.ED25519:         true,
}

func algName(a uint8) string {
	if s, ok := dns.AlgorithmToString[a]; ok {
		return fmt.Sprintf("%d (%s)", a, s)
	}
	return strconv.Itoa(int(a))
}

// CheckDNSKEY reports what keeps pub from signing this network's zones: a protocol other than 3,
// no Zone Key flag, the REVOKE flag, an algorithm this package does not sign with, or a public
// key that is not one of that algorithm (RSA: 1024 bits at least).
func CheckDNSKEY(pub *dns.DNSKEY) error {
	if pub.Protocol != 3 {
		return fmt.Errorf("protocol %d, want 3", pub.Protocol)
	}
	if pub.Flags&dns.ZONE == 0 {
		return fmt.Errorf("flags %d: not a zone key (flag 256 missing)", pub.Flags)
	}
	if pub.Flags&dns.REVOKE != 0 {
		return fmt.Errorf("flags %d: the key is revoked", pub.Flags)
	}
	if !supported[pub.Algorithm] {
		return fmt.Errorf("algorithm %s is not supported: use 13 (ECDSAP256SHA256), 15 (ED25519), 14 (ECDSAP384SHA384) or 8 (RSASHA256)", algName(pub.Algorithm))
	}
	// miekg/dns parses any text as the public key; a DS or key tag made of it would be wrong
	// without a word.
	raw, err := base64.StdEncoding.DecodeString(pub.PublicKey)
	if err != nil {
		return fmt.Errorf("the public key is not base64: %v", err)
	}
	want := map[uint8]int{dns.ECDSAP256SHA256: 64, dns.ECDSAP384SHA384: 96, dns.ED25519: 32}[pub.Algorithm]
	if want != 0 && len(raw) != want || pub.Algorithm == dns.RSASHA256 && len(raw) < 3+128 {
		return fmt.Errorf("a public key of %d bytes is wrong for algorithm %s", len(raw), algName(pub.Algorithm))
	}
	return nil
}

// NewKey pairs a DNSKEY with its private key. It refuses what CheckDNSKEY refuses, a private key
// of another algorithm, and a pair that does not belong together: it signs a record with priv and
// verifies the signature with pub, because miekg/dns takes an ECDSA or RSA public key from the
// DNSKEY and never compares it with the private one, so a mismatched pair would sign every answer
// with signatures no validator accepts. It also refuses a key whose tag is 0, which miekg/dns
// cannot sign with. file names the key in messages.
func NewKey(pub *dns.DNSKEY, priv crypto.PrivateKey, file string) (*Key, error) {
	if pub == nil || priv == nil {
		return nil, errors.New("missing public or private key")
	}
	if err := CheckDNSKEY(pub); err != nil {
		return nil, err
	}
	signer, err := privateFor(pub, priv)
	if err != nil {
		return nil, err
	}
	k := &Key{dnskey: *pub, tag: pub.KeyTag(), priv: signer, file: file}
	if k.tag == 0 {
		// A valid tag (one key in 65536 has it), but miekg/dns takes 0 for "unset" and refuses to
		// sign with it ("dns: bad key").
		return nil, errors.New("key tag 0 cannot be used with this signer: generate another key")
	}
	k.dnskey.Hdr.Rrtype = dns.TypeDNSKEY
	if err := k.selfTest(); err != nil {
		return nil, err
	}
	return k, nil
}

// privateFor checks that priv is a key of pub's algorithm.
func privateFor(pub *dns.DNSKEY, priv crypto.PrivateKey) (crypto.Signer, error) {
	mismatch := func(what string) error {
		return fmt.Errorf("the private key is %s, the DNSKEY says algorithm %s", what, algName(pub.Algorithm))
	}
	switch p := priv.(type) {
	case *ecdsa.PrivateKey:
		want := elliptic.P256()
		if pub.Algorithm == dns.ECDSAP384SHA384 {
			want = elliptic.P384()
		}
		if pub.Algorithm != dns.ECDSAP256SHA256 && pub.Algorithm != dns.ECDSAP384SHA384 || p.Curve != want {
			return nil, mismatch("ECDSA " + p.Curve.Params().Name)
		}
		return p, nil
	case ed25519.PrivateKey:
		if pub.Algorithm != dns.ED25519 {
			return nil, mismatch("Ed25519")
		}
		return p, nil
	case *rsa.PrivateKey:
		if pub.Algorithm != dns.RSASHA256 {
			return nil, mismatch("RSA")
		}
		// miekg/dns reads neither the CRT values nor checks the primes.
		if err := p.Validate(); err != nil {
			return nil, fmt.Errorf("bad RSA private key: %w", err)
		}
		p.Precompute()
		return p, nil
	}
	return nil, fmt.Errorf("unsupported private key type %T", priv)
}

func (k *Key) selfTest() error {
	pub := k.dnskey
	pub.Hdr = dns.RR_Header{Name: ".", Rrtype: dns.TypeDNSKEY, Class: dns.ClassINET}
	rrset := []dns.RR{&dns.TXT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeTXT, Class: dns.ClassINET}, Txt: []string{"amtrelay key check"}}}
	sig := &dns.RRSIG{Algorithm: pub.Algorithm, KeyTag: k.tag, SignerName: ".", Inception: 1, Expiration: 2}
	if err := sig.Sign(k.priv, rrset); err != nil {
		return fmt.Errorf("cannot sign with the private key: %w", err)
	}
	if err := sig.Verify(&pub, rrset); err != nil {
		return errors.New("the private key does not belong to the public key (a test signature does not verify)")
	}
	return nil
}

// keyFileName is how BIND names key files: K<owner>+<algorithm>+<tag>.
var keyFileName = regexp.MustCompile(`\+([0-9]{3})\+([0-9]{5})$`)

// basename strips a .key or .private suffix, so a key may be named by either file or by neither.
func basename(name string) string {
	for _, ext := range []string{".key", ".private"} {
		if b, ok := strings.CutSuffix(name, ext); ok {
			return b
		}
	}
	return name
}

// ReadDNSKEY reads the DNSKEY record of a BIND key file. name is the .key file or its basename
// (K<owner>+<alg>+<tag>, as dnssec-keygen writes it; a .private name is taken as its basename). A
// basename in BIND's form must agree with the record's algorithm and key tag: a renamed or edited
// file would otherwise load a key other than the operator meant. The record is not checked
// further; see CheckDNSKEY.
func ReadDNSKEY(name string) (*dns.DNSKEY, error) {
	base := basename(name)
	path := base + ".key"
	text, err := readKeyFile(path)
	if err != nil {
		return nil, err
	}
	rr, err := dns.ReadRR(bytes.NewReader(text), path)
	if err != nil {
		return nil, inFile(path, err)
	}
	if rr == nil {
		return nil, fmt.Errorf("%s: no DNSKEY record in the file", path)
	}
	pub, ok := rr.(*dns.DNSKEY)
	if !ok {
		return nil, fmt.Errorf("%s: holds a record of type %s, not DNSKEY", path, dns.TypeToString[rr.Header().Rrtype])
	}
	if m := keyFileName.FindStringSubmatch(filepath.Base(base)); m != nil {
		alg, _ := strconv.Atoi(m[1])
		tag, _ := strconv.Atoi(m[2])
		if alg != int(pub.Algorithm) || tag != int(pub.KeyTag()) {
			return nil, fmt.Errorf("%s: the file name says algorithm %d tag %d, the record is algorithm %d tag %d",
				path, alg, tag, pub.Algorithm, pub.KeyTag())
		}
	}
	return pub, nil
}

// LoadKeys reads BIND key pairs: for each basename K<owner>+<alg>+<tag> the public key from
// <basename>.key and the private key from <basename>.private (a name ending in .key or .private
// is taken as its basename). Owner names in the files are ignored: the keys sign every apex.
// Every key must pass NewKey, and the set must pass Roles. Errors name the file.
func LoadKeys(basenames []string) ([]*Key, error) {
	keys := make([]*Key, 0, len(basenames))
	for _, name := range basenames {
		k, err := loadKey(basename(name))
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	if _, _, err := Roles(keys); err != nil {
		return nil, err
	}
	return keys, nil
}

func loadKey(base string) (*Key, error) {
	pub, err := ReadDNSKEY(base)
	if err != nil {
		return nil, err
	}
	if err := CheckDNSKEY(pub); err != nil {
		return nil, fmt.Errorf("%s.key: %w", base, err)
	}
	path := base + ".private"
	text, err := readKeyFile(path)
	if err != nil {
		return nil, err
	}
	priv, err := pub.ReadPrivateKey(bytes.NewReader(text), path)
	if err != nil {
		return nil, inFile(path, fmt.Errorf("reading the private key: %w", err))
	}
	k, err := NewKey(pub, priv, filepath.Base(base))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// maxKeyFile bounds a key file: an RSA-4096 private key in BIND's format is about 3.3 KB.
const maxKeyFile = 64 << 10

// readKeyFile reads a key file that must be a regular file of at most maxKeyFile bytes: a FIFO at
// the path would otherwise hang start-up or a Corefile reload in open(2), and /dev/zero fill memory.
func readKeyFile(path string) ([]byte, error) {
	f, err := openfile.Nonblocking(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", path)
	}
	text, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, err
	}
	if len(text) > maxKeyFile {
		return nil, fmt.Errorf("%s: larger than %d bytes: not a key file", path, maxKeyFile)
	}
	return text, nil
}

// inFile prefixes err with path unless miekg/dns's parse error names the file already.
func inFile(path string, err error) error {
	if strings.Contains(err.Error(), path) {
		return err
	}
	return fmt.Errorf("%s: %w", path, err)
}

// Roles splits keys into the signers of DNSKEY RRsets (ksks) and of every other RRset (zsks).
//
//   - Every key with the SEP flag (257) is a KSK, every other key (256) a ZSK.
//   - If all keys are SEP keys (the usual single key included) each one is a CSK and signs
//     everything: ksks and zsks are both keys.
//   - At least one SEP key is required, also for a single key. The DS in S's reverse zone must
//     point at a key that signs the DNSKEY RRset, and amtrelay-ds makes DS records of SEP keys
//     only; a set without one could be served but never delegated to securely.
//   - Each algorithm must have a KSK and a ZSK: RFC 4035 section 2.2 wants every RRset signed with
//     every algorithm of the apex DNSKEY RRset, and validators that enforce it would reject
//     answers otherwise.
//   - Several SEP keys are fine (a KSK rollover, an algorithm rollover, two CSKs); the same key
//     twice is not.
func Roles(keys []*Key) (ksks, zsks []*Key, err error) {
	if len(keys) == 0 {
		return nil, nil, errors.New("no keys")
	}
	for i, k := range keys {
		if k == nil {
			return nil, nil, errors.New("nil key")
		}
		for _, o := range keys[:i] {
			if k.dnskey.Algorithm == o.dnskey.Algorithm && k.dnskey.PublicKey == o.dnskey.PublicKey {
				if k.file == o.file {
					return nil, nil, fmt.Errorf("%s: the key is given twice", k.file)
				}
				return nil, nil, fmt.Errorf("%s and %s are the same key", o.file, k.file)
			}
		}
		if k.SEP() {
			ksks = append(ksks, k)
		} else {
			zsks = append(zsks, k)
		}
	}
	if len(ksks) == 0 {
		return nil, nil, errors.New("no key has the SEP flag (257): the parent's DS must point at a key that signs the DNSKEY set; make the KSK or CSK with dnssec-keygen -f KSK")
	}
	if len(zsks) == 0 {
		return keys, keys, nil
	}
	for _, a := range []struct {
		have, lack []*Key
		role       string
	}{{ksks, zsks, "ZSK"}, {zsks, ksks, "KSK"}} {
		for _, k := range a.have {
			if !hasAlgorithm(a.lack, k.dnskey.Algorithm) {
				return nil, nil, fmt.Errorf("%s: no %s of algorithm %s; every algorithm needs a KSK and a ZSK", k.file, a.role, algName(k.dnskey.Algorithm))
			}
		}
	}
	return ksks, zsks, nil
}

func hasAlgorithm(keys []*Key, alg uint8) bool {
	for _, k := range keys {
		if k.dnskey.Algorithm == alg {
			return true
		}
	}
	return false
}
