package health

import "testing"

func TestObserveHysteresis(t *testing.T) {
	p := Policy{Fails: 3, Rises: 2}
	tests := []struct {
		name     string
		outcomes []bool
		wantUp   []bool // published state after each outcome
	}{
		{"first failure decides at once", []bool{false}, []bool{false}},
		{"first success keeps up", []bool{true}, []bool{true}},
		{"three failures take it down", []bool{true, false, false, false}, []bool{true, true, true, false}},
		{"a success resets the failure streak", []bool{true, false, false, true, false, false}, []bool{true, true, true, true, true, true}},
		{"two successes bring it back", []bool{false, true, true}, []bool{false, false, true}},
		{"a failure resets the rise streak", []bool{false, true, false, true}, []bool{false, false, false, false}},
		{"flapping never flips", []bool{true, false, true, false, true, false}, []bool{true, true, true, true, true, true}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var s State
			if !s.Up() {
				t.Fatalf("Expected a new state to be up")
			}
			for i, ok := range tc.outcomes {
				s.Observe(ok, p)
				if got := s.Up(); got != tc.wantUp[i] {
					t.Fatalf("After outcome %d (%v): up = %v, want %v", i, ok, got, tc.wantUp[i])
				}
			}
		})
	}
}

func TestObserveReportsStreak(t *testing.T) {
	p := Policy{Fails: 3, Rises: 2}
	var s State
	if changed, _ := s.Observe(true, p); changed {
		t.Fatalf("Expected no change on a first success")
	}
	for i := 1; i <= 3; i++ {
		changed, streak := s.Observe(false, p)
		if (i == 3) != changed {
			t.Fatalf("Failure %d: changed = %v", i, changed)
		}
		if changed && streak != 3 {
			t.Fatalf("Expected streak 3 on the flip, got %d", streak)
		}
	}
	if !s.Observed() || s.Up() {
		t.Fatalf("Expected observed and down")
	}
	s.Observe(true, p)
	if changed, streak := s.Observe(true, p); !changed || streak != 2 {
		t.Fatalf("Expected to come back after 2 successes, changed=%v streak=%d", changed, streak)
	}
}

func TestThresholdOfOne(t *testing.T) {
	p := Policy{Fails: 1, Rises: 1}
	var s State
	s.Observe(true, p)
	for i, ok := range []bool{false, true, false, true} {
		if changed, _ := s.Observe(ok, p); !changed || s.Up() != ok {
			t.Fatalf("Outcome %d (%v): changed=%v up=%v", i, ok, changed, s.Up())
		}
	}
}

func TestRestore(t *testing.T) {
	p := Policy{Fails: 2, Rises: 2}
	var s State
	s.Restore(false)
	if s.Up() || !s.Observed() {
		t.Fatalf("After Restore(false): up = %v, observed = %v; want down and observed", s.Up(), s.Observed())
	}
	// A restored state is past its first outcome: one success must not bring it up.
	if s.Observe(true, p); s.Up() {
		t.Fatalf("One success after Restore(false) brought the target up; rises is %d", p.Rises)
	}
	if s.Observe(true, p); !s.Up() {
		t.Fatalf("Two successes after Restore(false) left the target down")
	}
}
