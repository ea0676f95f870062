package bgp

import (
	"net/netip"
	"time"
)

// Status is a snapshot of the speaker's sessions.
type Status struct {
	// Running is true between Run starting GoBGP and Run returning.
	Running bool
	// Synced is true once every neighbor is synced: the plugin's
	// readiness. It stays true when sessions go down later.
	Synced    bool
	Neighbors []NeighborStatus // by address
}

// NeighborStatus is one neighbor's session.
type NeighborStatus struct {
	Address     netip.Addr
	RemoteAS    uint32
	Established bool
	// Since is when the session last came up or went down; the start of
	// Run if it never did either.
	Since time.Time
	// Families are the configured ones, in a fixed order.
	Families []FamilyStatus
	// Synced: the neighbor sent End-of-RIB for each negotiated family in
	// one session, or its hold time passed since Run started with its
	// session down. It latches.
	Synced bool
	// LastError says why the session last went down, as GoBGP words it;
	// empty if it never did.
	LastError string
}

// FamilyStatus is one family of a neighbor.
type FamilyStatus struct {
	Family Family
	// Negotiated: both sides offered the family in the current session.
	// The routes and End-of-RIB of a family the peer does not offer never
	// come, and synced does not wait for them.
	Negotiated bool
	// Prefixes counts the best paths in the RIB that came from this
	// neighbor: what the plugin sees of it, which is less than the
	// neighbor sent when another neighbor's path for a prefix wins.
	Prefixes int
	// EndOfRIB: End-of-RIB came for this family since the session came
	// up. A peer that never sends it (some send it only to a peer that
	// advertises graceful restart, which this speaker does) leaves the
	// neighbor unsynced until its session goes down.
	EndOfRIB bool
}

// Status returns the state of every neighbor.
func (s *Speaker) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	st := Status{Running: s.srv != nil, Synced: s.syncedAllLocked(now)}
	for _, n := range s.cfg.neighbors() {
		ns := s.neighbors[n.Address]
		synced := s.syncedLocked(ns, now)
		since := ns.since
		if since.IsZero() {
			since = s.runStart
		}
		out := NeighborStatus{
			Address:     n.Address,
			RemoteAS:    n.RemoteAS,
			Established: ns.established,
			Since:       since,
			Synced:      synced,
			LastError:   ns.lastError,
		}
		for _, f := range n.Families.List() {
			out.Families = append(out.Families, FamilyStatus{Family: f, Negotiated: ns.negotiated.Has(f), Prefixes: ns.prefixes[indexOf(f)], EndOfRIB: ns.eor.Has(f)})
		}
		st.Neighbors = append(st.Neighbors, out)
	}
	return st
}

// Synced is Status().Synced.
func (s *Speaker) Synced() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.syncedAllLocked(time.Now())
}

// syncedAllLocked reports whether Run is routing and every neighbor is
// synced; the caller holds mu.
func (s *Speaker) syncedAllLocked(now time.Time) bool {
	if s.srv == nil {
		return false
	}
	all := true
	for _, n := range s.cfg.neighbors() {
		all = s.syncedLocked(s.neighbors[n.Address], now) && all
	}
	return all
}
