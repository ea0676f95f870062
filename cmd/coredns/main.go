// Command coredns is CoreDNS v1.15 with every in-tree plugin plus amtrelay.
package main

import (
	"fmt"
	"os"

	"github.com/amtdns/amtrelay"

	"github.com/coredns/coredns/core/dnsserver"
	_ "github.com/coredns/coredns/core/plugin" // every in-tree plugin
	"github.com/coredns/coredns/coremain"
)

// init runs after every imported package's init, so the in-tree directive list is complete here.
func init() {
	directives, err := amtrelay.InsertDirective(dnsserver.Directives)
	if err == nil {
		err = dnsserver.SetDirectives(directives)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "amtrelay:", err)
		os.Exit(1)
	}
}

func main() {
	coremain.Run()
}
