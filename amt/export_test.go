package amt

// RequestCallers returns how many callers of Request wait, and how many of
// them wait on the Request awaiting its Query.
func (t *Tunnel) RequestCallers() (waiting, attached int) {
	t.rmu.Lock()
	defer t.rmu.Unlock()
	for _, a := range t.run.asks {
		if t.run.attached(a) {
			attached++
		}
	}
	return len(t.run.asks), attached
}
