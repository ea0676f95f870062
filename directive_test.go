package amtrelay

import (
	"slices"
	"testing"

	"github.com/coredns/coredns/core/dnsserver"
)

func TestInsertDirectiveOrder(t *testing.T) {
	d := directivesWithAMTRelay
	at := slices.Index(d, pluginName)
	if at < 0 {
		t.Fatalf("Expected amtrelay among the directives")
	}
	for _, before := range []string{"ready", "prometheus", "errors", "log", "acl", "rewrite", "cache", "dnssec", "template"} {
		if i := slices.Index(d, before); i < 0 || i > at {
			t.Errorf("Expected %s (at %d) to run before amtrelay (at %d)", before, i, at)
		}
	}
	for _, after := range []string{"hosts", "file", "auto", "forward", "whoami"} {
		if i := slices.Index(d, after); i < at {
			t.Errorf("Expected %s (at %d) to run after amtrelay (at %d)", after, i, at)
		}
	}
	if len(d) != len(inTreeDirectives)+1 {
		t.Errorf("Expected exactly one directive added, got %d -> %d", len(inTreeDirectives), len(d))
	}
}

func TestInsertDirectiveErrors(t *testing.T) {
	if _, err := InsertDirective([]string{"log", "forward"}); err == nil {
		t.Errorf("Expected an error without the hosts directive")
	}
	if _, err := InsertDirective(dnsserver.Directives); err == nil {
		t.Errorf("Expected an error when amtrelay is already there")
	}
}
