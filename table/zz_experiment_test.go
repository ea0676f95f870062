package table

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/gaissmai/bart"
)

func TestZZExperiment(t *testing.T) {
	e4, _ := bigData()
	sorted := slices.Clone(e4)
	slices.SortFunc(sorted, func(a, b genEntry) int {
		if c := a.p.Addr().Compare(b.p.Addr()); c != 0 {
			return c
		}
		return a.p.Bits() - b.p.Bits()
	})
	variants := []struct {
		name string
		f    func()
	}{
		{"bart-insert-random", func() {
			var tr bart.Table[uint32]
			for i, e := range e4 {
				tr.Insert(e.p, uint32(i))
			}
		}},
		{"bart-insert-sorted", func() {
			var tr bart.Table[uint32]
			for i, e := range sorted {
				tr.Insert(e.p, uint32(i))
			}
		}},
		{"sort-only", func() {
			s := slices.Clone(e4)
			slices.SortFunc(s, func(a, b genEntry) int {
				if c := a.p.Addr().Compare(b.p.Addr()); c != 0 {
					return c
				}
				return a.p.Bits() - b.p.Bits()
			})
		}},
		{"map-get-put-random", func() {
			m := make(map[netip.Prefix]uint32)
			for i, e := range e4 {
				if _, ok := m[e.p]; !ok {
					m[e.p] = uint32(i)
				}
			}
		}},
		{"bart-get-insert-random", func() {
			var tr bart.Table[uint32]
			for i, e := range e4 {
				if _, ok := tr.Get(e.p); !ok {
					tr.Insert(e.p, uint32(i))
				}
			}
		}},
		{"bart-get-insert-sorted", func() {
			var tr bart.Table[uint32]
			for i, e := range sorted {
				if _, ok := tr.Get(e.p); !ok {
					tr.Insert(e.p, uint32(i))
				}
			}
		}},
		{"builder-add+build-random", func() { buildFrom(t, e4) }},
		{"builder-add+build-sorted", func() { buildFrom(t, sorted) }},
	}
	best := make([]time.Duration, len(variants))
	bestCPU := make([]time.Duration, len(variants))
	for round := 0; round < 3; round++ {
		for i, v := range variants {
			heapAfterGC()
			c0, t0 := cpuTime(), time.Now()
			v.f()
			w, c := time.Since(t0), cpuTime()-c0
			if best[i] == 0 || w < best[i] {
				best[i] = w
			}
			if bestCPU[i] == 0 || c < bestCPU[i] {
				bestCPU[i] = c
			}
		}
	}
	for i, v := range variants {
		fmt.Printf("%-28s wall %8.3fs  cpu %8.3fs\n", v.name, best[i].Seconds(), bestCPU[i].Seconds())
	}
}
