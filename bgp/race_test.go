//go:build race

package bgp

// raceEnabled skips the tests that only GoBGP's own data races fail under
// the race detector; see TestSessionLoss.
const raceEnabled = true
