package amtrelay

import (
	"context"
	"fmt"
	"sync/atomic"
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

// adminFile keeps an instance's admin modes in step with its admin file, as sourcesFile does for
// the sources: read safely, loaded whole or not at all, a bad version reported once while the last
// good one stays, each change of a relay's mode logged once.
type adminFile struct {
	cfg     adminConfig
	relays  *config
	file    *table.SourceFile
	publish func(adminModes)

	current atomic.Pointer[adminModes] // read by metrics

	// Written by the first load in setup, then only by the watch goroutine.
	inService bool   // the version last read is the one in service, not one that was rejected
	lastErr   string // the failure last reported, so that a file that stays broken is reported once
}

func newAdminFile(ac adminConfig, cfg *config, publish func(adminModes)) *adminFile {
	return &adminFile{cfg: ac, relays: cfg, file: table.NewSourceFile(ac.path, adminMaxSize), publish: publish}
}

// load reads the first version; an error fails start-up or the Corefile reload.
func (f *adminFile) load(ctx context.Context) error {
	text, err := f.file.First(ctx, firstLoadSettle)
	if err == nil {
		err = f.apply(text)
	}
	if err != nil {
		return lineErr(f.cfg.corefile, f.cfg.line, "admin: %s", oneLine(err))
	}
	return nil
}

func (f *adminFile) apply(text string) error {
	f.inService = false
	modes, err := parseAdminFile(text, f.cfg.path, f.relays)
	if err != nil {
		return err
	}
	f.inService = true
	prev := f.current.Load()
	for i, r := range f.relays.relays {
		was := adminAuto
		if prev != nil {
			was = (*prev)[i]
		}
		if modes[i] != was {
			log.Infof("relay %s admin state %s (was %s)", r.name, modes[i], was)
		}
	}
	f.current.Store(&modes)
	f.publish(modes)
	return nil
}

// watch checks the file every reload interval until ctx ends.
func (f *adminFile) watch(ctx context.Context) {
	t := time.NewTimer(f.cfg.reload)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		next := f.cfg.reload
		if settleIn := f.check(ctx); settleIn > 0 {
			next = min(next, settleIn)
		}
		t.Reset(next)
	}
}

// check is one look at the file; it returns how soon to look again when the file changed but has
// not settled.
func (f *adminFile) check(ctx context.Context) (settleIn time.Duration) {
	text, changed, settleIn, err := f.file.Next(ctx)
	if err == nil && changed {
		err = f.apply(text)
	}
	if ctx.Err() != nil {
		return 0
	}
	switch {
	case err != nil:
		if msg := oneLine(err); msg != f.lastErr {
			f.lastErr = msg
			log.Errorf("Reload of %s failed, keeping the admin states in service: %s", f.cfg.path, msg)
		}
	case changed, settleIn == 0 && f.inService:
		f.lastErr = ""
	}
	return settleIn
}
