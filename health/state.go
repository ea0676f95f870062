// Package health is the up/down state machine behind relay health checks. It knows nothing about
// sockets or time: its owner feeds it probe outcomes and publishes what Up says.
package health

// Policy holds the hysteresis thresholds.
type Policy struct {
	Fails int // consecutive failed probes that take an up target down
	Rises int // consecutive good probes that bring a down target back up
}

// State is the health of one probe target. It is a plain value: its owner serialises access.
type State struct {
	down     bool // zero value = up: until the first probe answers, serve rather than hide the target
	observed bool
	streak   int // length of the current run of outcomes that disagree with the published state
}

// Up reports the published state.
func (s *State) Up() bool { return !s.down }

// Observed reports whether any outcome has been recorded yet.
func (s *State) Observed() bool { return s.observed }

// Restore publishes a state carried over from an earlier observer of the same target. The
// hysteresis then applies from the next outcome on: only a target never observed lets its first
// outcome decide at once.
func (s *State) Restore(up bool) {
	s.down = !up
	s.observed = true
	s.streak = 0
}

// Observe records one probe outcome and reports whether the published state flipped and, if it did,
// how many consecutive outcomes caused it.
//
// The first outcome decides the state at once: a relay found dead at start-up must not be handed out
// for Fails rounds, and one found alive must not wait Rises rounds before the server turns ready.
func (s *State) Observe(ok bool, p Policy) (changed bool, streak int) {
	if !s.observed {
		s.observed = true
		s.streak = 0
		if ok == s.Up() {
			return false, 0
		}
		s.down = !ok
		return true, 1
	}
	if ok == s.Up() {
		s.streak = 0
		return false, 0
	}
	s.streak++
	threshold := p.Fails
	if ok {
		threshold = p.Rises
	}
	if s.streak < threshold {
		return false, 0
	}
	streak = s.streak
	s.streak = 0
	s.down = !ok
	return true, streak
}
