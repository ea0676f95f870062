package amtrelay

import (
	"context"
	"sync"
	"time"
)

// lifecycle owns the background work of one instance: one context and one WaitGroup, started
// together in OnStartup and stopped together, whoever stops it first: OnShutdown, or the old
// instance's OnRestartFailed for an instance that a failed Corefile reload discarded.
type lifecycle struct {
	mu      sync.Mutex
	cancel  context.CancelFunc // set while running
	stopped bool
	wg      sync.WaitGroup
}

// start runs begin, which starts the background work under ctx and wg, unless the lifecycle has
// already been started. It reports whether it ran begin.
func (l *lifecycle) start(begin func(ctx context.Context, wg *sync.WaitGroup)) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cancel != nil || l.stopped {
		return false
	}
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel = cancel
	begin(ctx, &l.wg)
	return true
}

// stop cancels the background work and waits for all of it to end. Only the first call after a
// start does anything; it reports whether this was that call.
func (l *lifecycle) stop() bool {
	l.mu.Lock()
	cancel := l.cancel
	l.cancel, l.stopped = nil, true
	l.mu.Unlock()
	if cancel == nil {
		return false
	}
	cancel()
	l.wg.Wait()
	return true
}

// start is the OnStartup hook: relay health carried over from the instance this one replaces,
// then the probe loops and the watchers of the instance's files.
func (a *AMTRelay) start() error {
	a.life.start(func(ctx context.Context, wg *sync.WaitGroup) {
		for _, prev := range register(a, a.firstStartup) {
			a.health.adopt(prev.health)
		}
		if a.routes != nil {
			a.routes.start(ctx, wg)
		}
		a.prober.start(ctx, wg)
		for _, f := range a.followedFiles() {
			wg.Add(1)
			go func() {
				defer wg.Done()
				f.watch(ctx)
			}()
		}
	})
	return nil
}

// shutdown is the OnShutdown hook. In a final shutdown (SIGTERM) with a grace period, every block
// of the Corefile turns unready at once, so that the anycast route is withdrawn, and keeps
// answering until the grace period is over: caddy stops the servers only after the hooks return.
// In a Corefile reload caddy has stopped the old servers before this hook: there is nothing to
// wait for.
func (a *AMTRelay) shutdown() error {
	if grace := a.cfg.shutdownGrace; grace > 0 && !a.gen.beingReplaced.Load() {
		began := a.gen.leave()
		if wait := time.Until(began.Add(grace)); wait > 0 {
			log.Infof("Shutting down: not ready, answering for %v more", wait.Round(time.Millisecond))
			time.Sleep(wait)
		}
	}
	return a.stop()
}

// stop ends the instance's background work at once: the end of shutdown, and what a failed reload
// does to the instances it discards. It returns no error: one from an OnShutdown hook would stop
// caddy from running the others.
func (a *AMTRelay) stop() error {
	if !a.life.stop() {
		return nil
	}
	g := unregister(a)
	for _, r := range g.relays {
		deleteRelaySeries(r)
	}
	for _, z := range g.zones {
		deleteZoneSeries(z)
	}
	for _, cn := range g.canaries {
		deleteCanarySeries(cn)
	}
	return nil
}

// followedFiles lists the files the instance follows while it runs.
func (a *AMTRelay) followedFiles() []*followedFile {
	var files []*followedFile
	if a.sources != nil {
		files = append(files, &a.sources.followedFile)
	}
	if a.admin != nil {
		files = append(files, &a.admin.followedFile)
	}
	if a.peers != nil {
		files = append(files, &a.peers.followedFile)
	}
	return files
}
