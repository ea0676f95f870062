// Package gobgpstart starts GoBGP servers one at a time in a process.
//
// StartBgp sets package variables of GoBGP's (the route selection options), which two servers
// starting at once write together, and a best-path watch reads them as it is registered (for the
// paths the server already has). Serializing starts and registrations cannot keep one server's
// StartBgp from racing with another that is busy routing and reads them; as both write the same
// defaults, that race is harmless in practice, but the race detector reports it.
package gobgpstart

import (
	"context"
	"sync"

	"github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/server"
)

var mu sync.Mutex

// Start is srv.StartBgp, one at a time. It takes no context: StartBgp must reach the server's
// Serve loop once, or Stop cannot stop it.
func Start(srv *server.BgpServer, global *api.Global) error {
	mu.Lock()
	defer mu.Unlock()
	return srv.StartBgp(context.Background(), &api.StartBgpRequest{Global: global})
}

// Watch is srv.WatchEvent, one at a time with the starts of every server.
func Watch(ctx context.Context, srv *server.BgpServer, callbacks server.WatchEventMessageCallbacks, opts ...server.WatchOption) error {
	mu.Lock()
	defer mu.Unlock()
	return srv.WatchEvent(ctx, callbacks, opts...)
}
