package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/miekg/dns"

	"github.com/amtdns/amtrelay/amt"
)

// report is the whole result; -json prints it as is, and the text output
// is rendered from it, so the two cannot disagree. The package comment
// documents the fields.
type report struct {
	Source    string    `json:"source"`
	Group     string    `json:"group,omitempty"`
	Mode      string    `json:"mode"`
	Label     string    `json:"label"`
	Resolvers []string  `json:"resolvers"`
	Queries   []jsonQ   `json:"queries"`
	StaggerMS float64   `json:"stagger_ms"`
	TimeoutMS float64   `json:"timeout_ms"`
	Relays    []jsonRly `json:"relays"`
	Winner    *jsonWin  `json:"winner"`
	Data      *jsonData `json:"data,omitempty"`
	Notes     []string  `json:"notes"`
	Status    string    `json:"status"`
	ExitCode  int       `json:"exit_code"`
	began     time.Time // of the race
	exitText  string    // the status in words
	// What the text output needs beyond the JSON fields.
	rawSteps         []step
	attempts         []attempt
	stagger, timeout time.Duration
}

type jsonQ struct {
	Purpose   string    `json:"purpose"`
	Name      string    `json:"name"`
	Type      string    `json:"type"`
	CNAMEOf   string    `json:"cname_of,omitempty"`
	Status    string    `json:"status"`
	Partial   bool      `json:"partial"`
	Exchanges []jsonEx  `json:"exchanges"`
	Answer    []jsonRec `json:"answer"`
	Authority []jsonRec `json:"authority"`
}

type jsonEx struct {
	Server    string  `json:"server"`
	Transport string  `json:"transport"`
	TimeMS    float64 `json:"time_ms"`
	Rcode     string  `json:"rcode,omitempty"`
	Truncated bool    `json:"truncated"`
	Error     string  `json:"error,omitempty"`
}

type jsonRec struct {
	Name     string   `json:"name"`
	TTL      uint32   `json:"ttl"`
	Type     string   `json:"type"`
	Data     string   `json:"data"`
	AMTRELAY *jsonAMT `json:"amtrelay,omitempty"`
	Problem  string   `json:"problem,omitempty"`
}

type jsonAMT struct {
	Precedence uint8  `json:"precedence"`
	D          bool   `json:"d"`
	RelayType  uint8  `json:"relay_type"`
	Relay      string `json:"relay"`
	Usable     bool   `json:"usable"`
	Note       string `json:"note,omitempty"`
}

type jsonRly struct {
	Order       int      `json:"order"`
	Address     string   `json:"address"`
	Target      string   `json:"target"`
	Origin      string   `json:"origin"`
	Via         string   `json:"via,omitempty"`
	Precedence  *int     `json:"precedence"`
	D           bool     `json:"d"`
	Also        []string `json:"also,omitempty"`
	Group       int      `json:"group"`
	Routable    bool     `json:"routable"`
	Outcome     string   `json:"outcome"`
	Step        string   `json:"step,omitempty"`
	StartMS     *float64 `json:"start_ms"`
	TotalMS     *float64 `json:"total_ms"`
	DiscoveryMS *float64 `json:"discovery_ms"`
	RequestMS   *float64 `json:"request_ms"`
	Advertised  string   `json:"advertised,omitempty"`
	Detail      string   `json:"detail,omitempty"`
}

type jsonWin struct {
	Address string  `json:"address"`
	Target  string  `json:"target"`
	TimeMS  float64 `json:"time_ms"`
}

type jsonData struct {
	Outcome     string   `json:"outcome"`
	TunnelMS    *float64 `json:"tunnel_ms"`
	FirstDataMS *float64 `json:"first_data_ms"`
	Packets     uint64   `json:"packets"`
	Detail      string   `json:"detail,omitempty"`
}

// ms is a duration in milliseconds, to the microsecond.
func ms(d time.Duration) float64 {
	return math.Round(float64(d)/float64(time.Microsecond)) / 1000
}

func msp(d time.Duration) *float64 {
	v := ms(d)
	return &v
}

func fmtMS(d time.Duration) string {
	return fmt.Sprintf("%.2f ms", ms(d))
}

func (r *report) addSteps(steps []step) {
	r.rawSteps = steps
	for _, s := range steps {
		q := jsonQ{Purpose: s.Purpose, Name: s.Name, Type: typeName(s.Type), CNAMEOf: s.CNAMEOf, Status: s.Status, Partial: s.Partial,
			Exchanges: []jsonEx{}, Answer: []jsonRec{}, Authority: []jsonRec{}}
		for _, e := range s.Exchanges {
			je := jsonEx{Server: e.Server.String(), Transport: e.Transport, TimeMS: ms(e.RTT), Truncated: e.Truncated}
			if e.Err != nil {
				je.Error = errorKind(e.Err) + ": " + e.Err.Error()
			} else {
				je.Rcode = rcodeName(e.Rcode)
			}
			q.Exchanges = append(q.Exchanges, je)
		}
		if s.Reply != nil {
			for _, rec := range s.Reply.Answer {
				q.Answer = append(q.Answer, toJSONRec(rec))
			}
			for _, rec := range s.Reply.Authority {
				q.Authority = append(q.Authority, toJSONRec(rec))
			}
		}
		r.Queries = append(r.Queries, q)
	}
}

func typeName(t uint16) string { return record{Type: t}.TypeString() }

func toJSONRec(rec record) jsonRec {
	j := jsonRec{Name: rec.Name, TTL: rec.TTL, Type: rec.TypeString(), Data: rec.Data(), Problem: rec.Problem}
	if a := rec.AMT; a != nil {
		ja := &jsonAMT{Precedence: a.Precedence, D: a.D, RelayType: a.Type, Usable: a.Usable, Note: amtNote(*a)}
		switch {
		case a.Addr.IsValid():
			ja.Relay = a.Addr.String()
		case a.Name != "":
			ja.Relay = a.Name
		case a.Type == relayNone:
			ja.Relay = "."
		}
		j.AMTRELAY = ja
	}
	return j
}

// amtNote explains an AMTRELAY record in a few words.
func amtNote(a amtRelay) string {
	var notes []string
	if a.Problem != "" {
		notes = append(notes, a.Problem)
	}
	if a.D && a.Usable {
		notes = append(notes, "D=1: a gateway may skip Discovery; amtdiscover runs it anyway")
	}
	return strings.Join(notes, "; ")
}

// whyLost explains an attempt's outcome for the report.
func whyLost(a attempt) string {
	switch a.Outcome {
	case "won":
		return "first Membership Query without L"
	case "slower":
		return "connected too, after the winner"
	case "cancelled":
		return fmt.Sprintf("still waiting at %s when the winner connected", waitingFor(a.Reply.Step))
	case "not_started":
		return "not started: the winner connected first"
	case "interrupted":
		return "interrupted"
	case "limit":
		return "Membership Query with L set: takes no new tunnels (RFC 8777: hold down ~10 min)"
	case "no_query":
		return "advertised " + a.Reply.Relay.String() + " but sent no Membership Query"
	case "timeout":
		return "no Relay Advertisement"
	case "refused":
		if a.Reply.Step == amt.StepRequest {
			return "Request refused (ICMP port unreachable) at " + a.Reply.Relay.String()
		}
		return "refused (ICMP port unreachable)"
	case "bad_reply":
		return fmt.Sprintf("replies that were not a valid %s", waitingFor(a.Reply.Step))
	case "no_data":
		return "won, but no Multicast Data arrived"
	}
	if a.Reply.Err != nil {
		return a.Reply.Err.Error()
	}
	return ""
}

func waitingFor(s amt.HandshakeStep) string {
	if s == amt.StepRequest {
		return "Membership Query"
	}
	return "Relay Advertisement"
}

func (r *report) addAttempts(at []attempt, winner int) {
	r.attempts = at
	r.Relays = []jsonRly{}
	for i, a := range at {
		j := jsonRly{Order: i + 1, Address: a.Cand.Addr.String(), Target: a.Target.String(), Origin: a.Cand.Origin,
			Via: a.Cand.Via, D: a.Cand.D, Also: a.Cand.Also, Group: a.Cand.Group, Routable: a.Cand.Routable,
			Outcome: a.Outcome, Detail: whyLost(a)}
		if a.Cand.Precedence >= 0 {
			p := a.Cand.Precedence
			j.Precedence = &p
		}
		if !a.Started.IsZero() {
			j.StartMS = msp(a.Started.Sub(r.began))
			j.Step = a.Reply.Step.String()
			if !a.Ended.IsZero() {
				j.TotalMS = msp(a.Ended.Sub(a.Started))
			}
			if a.Reply.DiscoveryRTT > 0 {
				j.DiscoveryMS = msp(a.Reply.DiscoveryRTT)
			}
			if a.Reply.RequestRTT > 0 {
				j.RequestMS = msp(a.Reply.RequestRTT)
			}
			if a.Reply.Relay.IsValid() {
				j.Advertised = a.Reply.Relay.String()
			}
		}
		r.Relays = append(r.Relays, j)
	}
	if winner >= 0 {
		w := at[winner]
		r.Winner = &jsonWin{Address: w.Cand.Addr.String(), Target: w.Target.String(), TimeMS: ms(w.Ended.Sub(r.began))}
	}
}

func (r *report) writeJSON(w io.Writer) error {
	if r.Queries == nil {
		r.Queries = []jsonQ{}
	}
	if r.Relays == nil {
		r.Relays = []jsonRly{}
	}
	if r.Notes == nil {
		r.Notes = []string{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

func (r *report) writeText(w io.Writer) {
	fmt.Fprintf(w, "source %s", r.Source)
	if r.Group != "" {
		fmt.Fprintf(w, ", group %s", r.Group)
	}
	fmt.Fprintf(w, ", mode %s, resolver %s\n", r.Mode, strings.Join(r.Resolvers, " "))

	for _, s := range r.rawSteps {
		fmt.Fprintf(w, "\n%s %s %s", s.Purpose, typeName(s.Type), s.Name)
		if s.CNAMEOf != "" {
			fmt.Fprintf(w, " (CNAME target of %s)", s.CNAMEOf)
		}
		fmt.Fprintln(w)
		for _, e := range s.Exchanges {
			fmt.Fprintf(w, "  %s %s %s: ", e.Server, e.Transport, fmtMS(e.RTT))
			switch {
			case e.Err != nil:
				fmt.Fprintf(w, "%s (%v)\n", errorKind(e.Err), e.Err)
			case e.Truncated:
				fmt.Fprintf(w, "%s, truncated\n", rcodeName(e.Rcode))
			default:
				fmt.Fprintf(w, "%s\n", rcodeName(e.Rcode))
			}
		}
		if s.Reply != nil {
			tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
			for _, rec := range s.Reply.Answer {
				writeRec(tw, rec, "")
			}
			for _, rec := range s.Reply.Authority {
				writeRec(tw, rec, "authority")
			}
			tw.Flush()
		}
		if s.Partial {
			fmt.Fprintf(w, "  => %s, partial: truncated over UDP and TCP failed\n", s.Status)
		} else {
			fmt.Fprintf(w, "  => %s\n", s.Status)
		}
	}

	if len(r.attempts) > 0 {
		fmt.Fprintf(w, "\nrelays, in the order a gateway tries them (next one after %v or a failure; %v each):\n",
			r.stagger, r.timeout)
		tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "  #\trelay\tfound as\tstart\tdiscovery\trequest\toutcome\twhy")
		for i, a := range r.attempts {
			j := r.Relays[i]
			start, disc, req := "-", "-", "-"
			if j.StartMS != nil {
				start = fmt.Sprintf("+%.2f ms", *j.StartMS)
			}
			if j.DiscoveryMS != nil {
				disc = fmt.Sprintf("%.2f ms", *j.DiscoveryMS)
			}
			if j.RequestMS != nil {
				req = fmt.Sprintf("%.2f ms", *j.RequestMS)
			}
			fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", j.Order, j.Target, a.Cand.describe(), start, disc, req, j.Outcome, j.Detail)
		}
		tw.Flush()
		for i, a := range r.attempts {
			var extra []string
			if a.Cand.D {
				extra = append(extra, "D=1: a gateway may skip Discovery; amtdiscover runs it anyway")
			}
			if a.Reply.Relay.IsValid() && a.Reply.Relay != a.Cand.Addr {
				extra = append(extra, "advertised "+a.Reply.Relay.String())
			}
			if !a.Cand.Routable {
				extra = append(extra, "no route to it (RFC 6724 rule 1: tried last in its group)")
			}
			for _, al := range a.Cand.Also {
				extra = append(extra, "also "+al)
			}
			if len(extra) > 0 {
				fmt.Fprintf(w, "  %d: %s\n", i+1, strings.Join(extra, "; "))
			}
		}
	}
	if r.Winner != nil {
		fmt.Fprintf(w, "\nwinner: %s, connected %.2f ms after the race started\n", r.Winner.Target, r.Winner.TimeMS)
	}
	if d := r.Data; d != nil {
		fmt.Fprintf(w, "group (%s, %s): ", r.Source, r.Group)
		if d.TunnelMS != nil {
			fmt.Fprintf(w, "tunnel established in %.2f ms, ", *d.TunnelMS)
		}
		if d.FirstDataMS != nil {
			fmt.Fprintf(w, "first data %.2f ms after the tunnel started (packets at the first look: %d)\n", *d.FirstDataMS, d.Packets)
		} else {
			fmt.Fprintf(w, "no data: %s\n", d.Detail)
		}
	}
	if len(r.Notes) > 0 {
		fmt.Fprintln(w)
		for _, n := range r.Notes {
			fmt.Fprintf(w, "note: %s\n", n)
		}
	}
	fmt.Fprintf(w, "\nresult: %s: %s (exit %d)\n", r.Status, r.exitText, r.ExitCode)
}

func writeRec(w io.Writer, rec record, section string) {
	line := fmt.Sprintf("  %s\t%d\t%s\t%s", rec.Name, rec.TTL, rec.TypeString(), rec.Data())
	var notes []string
	if section != "" {
		notes = append(notes, section)
	}
	if rec.AMT != nil {
		if n := amtNote(*rec.AMT); n != "" {
			notes = append(notes, n)
		}
	}
	if rec.Problem != "" {
		notes = append(notes, rec.Problem)
	}
	if rec.Class != dns.ClassINET {
		notes = append(notes, "class "+dns.Class(rec.Class).String())
	}
	if len(notes) > 0 {
		line += "\t; " + strings.Join(notes, "; ")
	}
	fmt.Fprintln(w, line)
}
