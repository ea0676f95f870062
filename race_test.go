//go:build race

package amtrelay

// raceEnabled skips the checks that only GoBGP's own data races fail under the race detector;
// `make test` runs them again without it.
const raceEnabled = true
