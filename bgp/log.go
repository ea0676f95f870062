package bgp

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
)

// logHandler passes GoBGP's errors to a Logf and drops the rest: GoBGP
// logs every connection attempt and state change, which peerEvent already
// reduces to one line per session that comes up or goes down.
type logHandler struct {
	logf  Logf
	attrs []slog.Attr
}

func (h *logHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelError }

func (h *logHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	add := func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	}
	for _, a := range h.attrs {
		add(a)
	}
	r.Attrs(add)
	h.logf("bgp: gobgp: %s", b.String())
	return nil
}

func (h *logHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &logHandler{logf: h.logf, attrs: append(h.attrs[:len(h.attrs):len(h.attrs)], attrs...)}
}

// WithGroup flattens groups: the lines are for people, not parsers.
func (h *logHandler) WithGroup(string) slog.Handler { return h }
