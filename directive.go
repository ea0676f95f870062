package amtrelay

import (
	"fmt"
	"slices"
)

// runsBefore is the directive amtrelay is placed in front of. amtrelay runs after the plugins that
// log, count, cache or sign its answers (prometheus, log, cache, dnssec, ...) and before the ones that
// would answer its names themselves: hosts, file and auto in a shared reverse zone, and forward.
const runsBefore = "hosts"

// InsertDirective returns a copy of directives, a CoreDNS plugin execution order such as
// dnsserver.Directives, with amtrelay in its place. A main package that builds CoreDNS with this
// plugin passes the result to dnsserver.SetDirectives.
func InsertDirective(directives []string) ([]string, error) {
	if slices.Contains(directives, pluginName) {
		return nil, fmt.Errorf("directive %q is already in the list", pluginName)
	}
	i := slices.Index(directives, runsBefore)
	if i < 0 {
		return nil, fmt.Errorf("directive %q not found: cannot place %s", runsBefore, pluginName)
	}
	return slices.Insert(slices.Clone(directives), i, pluginName), nil
}
