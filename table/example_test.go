package table_test

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/amtdns/amtrelay/table"
)

// relays is the relay list of the examples; a table refers to relays by
// their index in it.
var relays = []string{"relay-a", "relay-b", "relay-c", "relay-d"}

func resolve(name string) (int, bool) {
	for i, r := range relays {
		if r == name {
			return i, true
		}
	}
	return 0, false
}

func ExampleBuilder() {
	b := table.NewBuilder()
	for i, e := range []struct {
		prefix string
		relays []int
	}{
		{"10.0.0.0/8", []int{0}},
		{"10.1.0.0/16", []int{2, 1}},
		{"2001:db8::/32", []int{3}},
	} {
		p, err := table.ParsePrefix(e.prefix)
		if err != nil {
			panic(err)
		}
		if err := b.Add(p, e.relays, table.Origin{File: "example", Line: i + 1}); err != nil {
			panic(err)
		}
	}
	t, err := b.Build()
	if err != nil {
		panic(err)
	}

	// The longest prefix containing the source wins. A set comes back
	// sorted, whatever the order it was added in.
	for _, src := range []string{"10.1.2.3", "10.200.0.1", "::ffff:10.1.2.3", "2001:db8::1", "192.0.2.1"} {
		rs, ok := t.Lookup(netip.MustParseAddr(src))
		fmt.Println(src, rs, ok)
	}
	fmt.Println(t.Len4(), "IPv4 and", t.Len6(), "IPv6 prefixes")
	// Output:
	// 10.1.2.3 [1 2] true
	// 10.200.0.1 [0] true
	// ::ffff:10.1.2.3 [1 2] true
	// 2001:db8::1 [3] true
	// 192.0.2.1 [] false
	// 2 IPv4 and 1 IPv6 prefixes
}

func ExampleParseFile() {
	const text = `# multicast sources and the relays that reach them
198.51.100.0/24   relay-a relay-b
198.51.100.128/25 relay-c   # a more specific route
2001:db8:100::/48 relay-d
`
	b, err := table.ParseFile(context.Background(), text, "sources.txt", resolve)
	if err != nil {
		panic(err)
	}
	t, err := b.Build()
	if err != nil {
		panic(err)
	}
	for _, src := range []string{"198.51.100.1", "198.51.100.200", "2001:db8:100::7"} {
		rs, _ := t.Lookup(netip.MustParseAddr(src))
		fmt.Println(src, rs)
	}

	// Every line is checked; the error names each problem's place.
	_, err = table.ParseFile(context.Background(),
		"198.51.100.0/24 relay-a\n198.51.100.7/24 relay-b\n203.0.113.0/24 relay-x\n",
		"sources.txt", resolve)
	fmt.Println(err)
	// Output:
	// 198.51.100.1 [0 1]
	// 198.51.100.200 [2]
	// 2001:db8:100::7 [3]
	// sources.txt:2: bad prefix "198.51.100.7/24": 198.51.100.7/24 has host bits set; did you mean 198.51.100.0/24?
	// sources.txt:3: unknown relay "relay-x"
}

func ExampleFileLoader() {
	ctx := context.Background()
	// An inline line of the Corefile wins over the file's line for its
	// prefix, in every version.
	inline := []table.Override{{
		Prefix: netip.MustParsePrefix("203.0.113.0/24"),
		Relays: []int{3},
		Origin: table.Origin{File: "Corefile", Line: 12},
	}}
	l := table.NewFileLoader("sources.txt", resolve, inline)
	show := func(name string, t *table.Table) {
		a, _ := t.Lookup(netip.MustParseAddr("198.51.100.1"))
		b, _ := t.Lookup(netip.MustParseAddr("203.0.113.1"))
		fmt.Printf("%s: 198.51.100.1 %v, 203.0.113.1 %v\n", name, a, b)
	}

	v1 := "198.51.100.0/24 relay-a\n203.0.113.0/24 relay-a\n2001:db8::/32 relay-b\n"
	t1, err := l.Load(ctx, v1)
	if err != nil {
		panic(err)
	}
	show("v1", t1)
	fmt.Println("changed lines:", l.ChangedLines()) // -1: parsed whole

	// The next version moves one route to other relays: only that line
	// is parsed, and applied to t1 copy-on-write.
	v2 := "198.51.100.0/24 relay-b relay-c\n203.0.113.0/24 relay-a\n2001:db8::/32 relay-b\n"
	t2, err := l.Load(ctx, v2)
	if err != nil {
		panic(err)
	}
	show("v2", t2)
	fmt.Println("changed lines:", l.ChangedLines()) // the old line and the new
	show("v1", t1)                                  // unchanged, for readers still using it

	// A bad version is refused; the next one is compared with v2.
	_, err = l.Load(ctx, v2+"192.0.2.0/24 relay-x\n")
	fmt.Println(err)
	// Output:
	// v1: 198.51.100.1 [0], 203.0.113.1 [3]
	// changed lines: -1
	// v2: 198.51.100.1 [1 2], 203.0.113.1 [3]
	// changed lines: 2
	// v1: 198.51.100.1 [0], 203.0.113.1 [3]
	// sources.txt:4: unknown relay "relay-x"
}
