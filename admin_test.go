package amtrelay

import (
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/amtdns/amtrelay/table"
)

const adminRelays = "relay a 192.0.2.1\nrelay b 192.0.2.2\nrelay c 192.0.2.3\nsource 198.51.100.0/24 a b c\n"

func TestParseAdminFile(t *testing.T) {
	a := newTestPlugin(t, "amtrelay in-addr.arpa {\n"+adminRelays+"}")
	for _, tc := range []struct {
		text string
		want string // modes of a b c, or the error
	}{
		{"", "auto auto auto"},
		{"# nothing forced\n\n", "auto auto auto"},
		{"a drain\nc up # maintenance over\n", "drain auto up"},
		{"* drain\nb up\n", "drain up drain"},
		{"b up\n* down\n", "down down down"}, // the last matching line wins
		{"a drain\r\na down\r\n", "down auto auto"},
		{"a drain\nd down\n", `admin.txt:2: unknown relay "d"`},
		{"a pause\n", `admin.txt:1: mode "pause": want drain, down or up`},
		{"a\n", "admin.txt:1: want RELAY drain|down|up, got 1 fields"},
		{"a drain now\n", "admin.txt:1: want RELAY drain|down|up, got 3 fields"},
		{"a drain\n" + strings.Repeat("x", 5000) + "\n", "admin.txt:2: line longer than 4096 bytes"},
	} {
		modes, err := parseAdminFile(tc.text, "admin.txt", a.cfg)
		got := ""
		if err != nil {
			got = err.Error()
		} else {
			var names []string
			for _, r := range a.cfg.relays {
				names = append(names, modes.of(r.index).String())
			}
			got = strings.Join(names, " ")
		}
		if got != tc.want {
			t.Errorf("%q: got %q, want %q", tc.text, got, tc.want)
		}
	}
}

// FuzzParseAdminFile checks that any text either fails with a bounded message or gives every
// relay the mode of the last line that names it or `*`.
func FuzzParseAdminFile(f *testing.F) {
	a := newTestPlugin(f, "amtrelay in-addr.arpa {\n"+adminRelays+"}")
	for _, seed := range []string{"", "a drain\nc up # done\n", "* drain\nb up\r\n", "a\n", "d down\n", "a pause\n\x00"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, text string) {
		modes, err := parseAdminFile(text, "admin.txt", a.cfg)
		if err != nil {
			if modes != nil || len(err.Error()) > 4096 {
				t.Fatalf("Error of %d bytes with modes %v: %.200s", len(err.Error()), modes, err)
			}
			return
		}
		want := map[string]string{}
		_ = table.ReadFields(text, "admin.txt", func(f []string) error {
			if f[0] == "*" {
				for _, r := range a.cfg.relays {
					want[r.name] = f[1]
				}
			} else {
				want[f[0]] = f[1]
			}
			return nil
		})
		for _, r := range a.cfg.relays {
			w, ok := want[r.name]
			if !ok {
				w = "auto"
			}
			if got := modes.of(r.index).String(); got != w {
				t.Fatalf("%q: relay %s is %s, want %s", text, r.name, got, w)
			}
		}
	})
}

// What each admin mode does to answers and readiness, with the probes saying a and b are up and c
// is down.
func TestAdminModes(t *testing.T) {
	a := newTestPlugin(t, "amtrelay in-addr.arpa {\n"+adminRelays+"health_check 1s\nall_down serve\n}")
	ids := func(names ...string) (out []int) {
		for _, n := range names {
			for _, e := range a.cfg.relays[a.cfg.relayByName[n]].endpoints {
				out = append(out, e.id)
			}
		}
		return out
	}
	a.health.observe(ids("a", "b"), outcome{ok: true, result: "ok"})
	a.health.observe(ids("c"), outcome{result: "timeout"})
	answerA := func() string {
		r, _ := serve(t, a, question(apexS, dns.TypeA))
		if r.msg.Rcode != dns.RcodeSuccess {
			return dns.RcodeToString[r.msg.Rcode]
		}
		var got []string
		for _, rr := range r.msg.Answer {
			got = append(got, rr.(*dns.A).A.String())
		}
		if len(got) == 0 {
			return "NODATA"
		}
		slices.Sort(got)
		return strings.Join(got, " ")
	}
	for _, tc := range []struct {
		admin string
		want  string
		ready bool
	}{
		{"", "192.0.2.1 192.0.2.2", true},
		{"a drain", "192.0.2.2", true},
		{"a down", "192.0.2.2", true},
		{"c up", "192.0.2.1 192.0.2.2 192.0.2.3", true},
		{"a drain\nb drain\nc up", "192.0.2.3", true},
		// Nothing serves: all_down serve hands out the relays that are down, never a drained one.
		{"a drain\nb down", "192.0.2.2 192.0.2.3", false},
		{"* down", "192.0.2.1 192.0.2.2 192.0.2.3", false},
		{"* drain", "NODATA", false},
	} {
		modes, err := parseAdminFile(tc.admin, "admin.txt", a.cfg)
		if err != nil {
			t.Fatal(err)
		}
		a.view.setAdmin(modes)
		if got := answerA(); got != tc.want {
			t.Errorf("%q: answer %s, want %s", tc.admin, got, tc.want)
		}
		if got := a.Ready(); got != tc.ready {
			t.Errorf("%q: ready %v, want %v", tc.admin, got, tc.ready)
		}
	}
}

// Through a real server: the admin file drains a relay, answers and readiness follow, the metric
// says so and the change is logged once; a bad version keeps the last good state.
func TestAdminFileServed(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "admin.txt")
	writeFile(t, path, "# nothing forced\n")
	readyAddr := freePort(t)
	logs := captureLog(t)
	s := startServer(t, fmt.Sprintf(`in-addr.arpa:0 {
	bind 127.0.0.1
	ready %s {
		monitor continuously
	}
	amtrelay {
		relay a 192.0.2.1
		relay b 192.0.2.2
		source 198.51.100.0/24 a b
		admin %s reload 100ms
		health_check off
	}
}
`, readyAddr, path))
	expectAddresses(t, s, "192.0.2.1 192.0.2.2")
	state := func(relay string) string {
		for k, v := range series(t, "coredns_amtrelay_relay_admin_state") {
			if v == 1 && strings.HasPrefix(k, "relay="+relay+",") {
				return strings.TrimPrefix(k, "relay="+relay+",state=")
			}
		}
		return "-"
	}
	if got := state("a"); got != "auto" {
		t.Errorf("Admin state of a: %s, want auto", got)
	}

	replaceFile(t, path, "a drain\n")
	expectAddresses(t, s, "192.0.2.2")
	if got := state("a"); got != "drain" {
		t.Errorf("Admin state of a: %s, want drain", got)
	}
	expectReady(t, readyAddr, http.StatusOK)

	// A bad version: reported with its line, the drain stays.
	replaceFile(t, path, "a drain\nb dwon\n")
	eventually(t, "the bad admin file reported", 5*time.Second, func() (bool, string) {
		return strings.Contains(logs.String(), path+`:2: mode "dwon"`), logs.String()
	})
	expectAddresses(t, s, "192.0.2.2")

	// Draining the whole network withdraws it.
	replaceFile(t, path, "* drain\n")
	expectReady(t, readyAddr, http.StatusServiceUnavailable)
	replaceFile(t, path, "")
	expectReady(t, readyAddr, http.StatusOK)
	expectAddresses(t, s, "192.0.2.1 192.0.2.2")
	if n := strings.Count(logs.String(), "relay a admin state drain (was auto)"); n != 1 {
		t.Errorf("Expected the drain of a logged once, got %d", n)
	}
}

func TestAdminParseErrors(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "admin.txt"), "a drain\nz up\n")
	for _, tc := range []struct {
		prop string
		err  string
	}{
		{"admin", "Wrong argument count"},
		{"admin a.txt reload", "Wrong argument count"},
		{"admin a.txt every 1s", `admin: unknown option "every"`},
		{"admin a.txt reload 1ms", "shorter than the minimum 100ms"},
		{"admin missing.txt", filepath.Join(dir, "missing.txt") + ": no such file"},
		{"admin admin.txt", filepath.Join(dir, "admin.txt") + `:2: unknown relay "z"`},
		{"shutdown_grace", "Wrong argument count"},
		{"shutdown_grace -1s", `shutdown_grace "-1s": want a duration from 0 to 5m0s`},
		{"shutdown_grace 1h", `shutdown_grace "1h"`},
	} {
		_, err := setupIn(t, dir, "amtrelay {\n"+adminRelays+tc.prop+"\n}")
		if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), ":6 ") {
			t.Errorf("%q: error %v, want one with %q at line 6", tc.prop, err, tc.err)
		}
	}
	a, err := setupIn(t, dir, "amtrelay {\n"+adminRelays+"admin a.txt reload 250ms\nshutdown_grace 3s\n}")
	if err == nil {
		t.Fatalf("Expected a missing admin file to fail, got %+v", a.cfg.admin)
	}
	writeFile(t, filepath.Join(dir, "a.txt"), "c down\n")
	a, err = setupIn(t, dir, "amtrelay {\n"+adminRelays+"admin a.txt reload 250ms\nshutdown_grace 3s\n}")
	if err != nil {
		t.Fatal(err)
	}
	if a.cfg.admin.reload != 250*time.Millisecond || a.cfg.admin.path != filepath.Join(dir, "a.txt") || a.cfg.shutdownGrace != 3*time.Second {
		t.Errorf("Parsed %+v, grace %v", a.cfg.admin, a.cfg.shutdownGrace)
	}
	if got := a.view.load().admin.of(a.cfg.relayByName["c"]); got != adminDown {
		t.Errorf("Mode of c after setup: %s, want down", got)
	}

}
