package amtrelay

import (
	"context"
	"fmt"
	"time"

	"github.com/amtdns/amtrelay/table"
)

// adminMode is what the operator says about a relay.
type adminMode uint8

const (
	adminAuto  adminMode = iota // follow the probes
	adminDrain                  // left out of every answer, still probed
	adminDown                   // down whatever the probes say
	adminUp                     // up whatever the probes say
	numAdminModes
)

var adminModeNames = [numAdminModes]string{"auto", "drain", "down", "up"}

func (m adminMode) String() string { return adminModeNames[m] }

// adminModes is the mode of every relay, by relay index; nil means every relay follows its probes.
// A published adminModes never changes.
type adminModes []adminMode

func (m adminModes) of(relay int) adminMode {
	if m == nil {
		return adminAuto
	}
	return m[relay]
}

// Defaults of the admin property. An admin file is a few lines; a big one is a mistake.
const (
	defaultAdminReload = time.Second
	adminMaxSize       = 1 << 20
)

// adminConfig is what the admin property says, and where it says it.
type adminConfig struct {
	path     string // "" without an admin file
	reload   time.Duration
	corefile string
	line     int
}

// parseAdminFile reads the lines `RELAY drain|down|up` of text, RELAY a relay name or `*` for
// every relay; the last line that names a relay decides its mode.
func parseAdminFile(text, name string, cfg *config) (adminModes, error) {
	modes := make(adminModes, len(cfg.relays))
	err := table.ReadFields(text, name, func(f []string) error {
		if len(f) != 2 {
			return fmt.Errorf("want RELAY drain|down|up, got %d fields", len(f))
		}
		var mode adminMode
		switch f[1] {
		case "drain":
			mode = adminDrain
		case "down":
			mode = adminDown
		case "up":
			mode = adminUp
		default:
			return fmt.Errorf("mode %s: want drain, down or up", table.Quote(f[1]))
		}
		if f[0] == "*" {
			for i := range modes {
				modes[i] = mode
			}
			return nil
		}
		i, ok := cfg.relayIndex(f[0])
		if !ok {
			return fmt.Errorf("unknown relay %s", table.Quote(f[0]))
		}
		modes[i] = mode
		return nil
	})
	if err != nil {
		return nil, err
	}
	return modes, nil
}

// adminFile keeps an instance's admin modes in step with its admin file, read like the sources
// file: whole or not at all, a bad version reported once while the last good one stays, and each
// change of a relay's mode logged once.
type adminFile struct {
	followedFile
	cfg     adminConfig
	relays  *config
	publish func(adminModes)

	current adminModes // the modes in service, for the log of changes; nil at first
}

func newAdminFile(ac adminConfig, cfg *config, publish func(adminModes)) *adminFile {
	f := &adminFile{cfg: ac, relays: cfg, publish: publish}
	f.followedFile = followedFile{
		file:  table.NewSourceFile(ac.path, adminMaxSize),
		every: ac.reload,
		what:  "admin states",
		apply: f.apply,
	}
	return f
}

// load reads the first version; an error names the Corefile line.
func (f *adminFile) load(ctx context.Context) error {
	if err := f.followedFile.load(ctx); err != nil {
		return lineErr(f.cfg.corefile, f.cfg.line, "admin: %s", oneLine(err))
	}
	return nil
}

func (f *adminFile) apply(_ context.Context, text string) (string, error) {
	modes, err := parseAdminFile(text, f.cfg.path, f.relays)
	if err != nil {
		return "", err
	}
	for i, r := range f.relays.relays {
		if was := f.current.of(i); modes[i] != was {
			log.Infof("relay %s admin state %s (was %s)", r.name, modes[i], was)
		}
	}
	f.current = modes
	f.publish(modes)
	return "", nil
}
