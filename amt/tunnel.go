package amt

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"syscall"
	"time"
)

// TunnelState is where a Tunnel is in its life.
type TunnelState uint8

const (
	// TunnelDiscovering: waiting for a Relay Advertisement.
	TunnelDiscovering TunnelState = iota
	// TunnelRequesting: the relay was advertised; waiting for its first
	// Membership Query.
	TunnelRequesting
	// TunnelEstablished: a Query without L arrived; joins are sent and
	// refreshed.
	TunnelEstablished
	// TunnelLimited: the relay set L; no Updates are sent until the hold-
	// down has passed and discovery starts over.
	TunnelLimited
	// TunnelClosed: Run returned or Close was called.
	TunnelClosed
)

// String returns the name used as a metrics label value.
func (s TunnelState) String() string {
	switch s {
	case TunnelDiscovering:
		return "discovering"
	case TunnelRequesting:
		return "requesting"
	case TunnelEstablished:
		return "established"
	case TunnelLimited:
		return "limited"
	case TunnelClosed:
		return "closed"
	}
	return fmt.Sprintf("TunnelState(%d)", uint8(s))
}

// Tunnel defaults and bounds.
const (
	// DefaultMaxBackoff caps the retry delay, which doubles from the reply
	// timeout after each failure.
	DefaultMaxBackoff = 30 * time.Second
	// MinRefresh and MaxRefresh bound the refresh interval taken from the
	// Query's QQI: amtrelayd forgets a gateway 60 s after its last Update,
	// so 30 s leaves room for a lost one.
	MinRefresh = time.Second
	MaxRefresh = 30 * time.Second
	// DefaultMaxMissedQueries Requests in a row without a Query send the
	// tunnel back to Discovery.
	DefaultMaxMissedQueries = 3
	// DefaultLimitHoldDown is how long a limited relay is left alone, the
	// figure RFC 8777 suggests for the L flag.
	DefaultLimitHoldDown = 10 * time.Minute
	// DefaultMaxChannels bounds Join.
	DefaultMaxChannels = 1024
)

// TunnelOptions tune a Tunnel; the zero value gives the defaults.
type TunnelOptions struct {
	// ReplyTimeout is how long an Advertisement or Query is waited for
	// before it counts as missing; default DefaultTimeout.
	ReplyTimeout time.Duration
	// MaxBackoff caps the delay before a retry; default DefaultMaxBackoff.
	MaxBackoff time.Duration
	// Refresh is how often, once established, the tunnel sends a Request
	// (to get a fresh Query) and re-sends its joins; default the Query's
	// QQI bounded to [MinRefresh, MaxRefresh].
	Refresh time.Duration
	// MaxMissedQueries: that many Requests in a row without a Query send
	// the tunnel back to Discovery; default DefaultMaxMissedQueries.
	MaxMissedQueries int
	// LimitHoldDown: how long to wait after a Query with L before
	// starting over; default DefaultLimitHoldDown.
	LimitHoldDown time.Duration
	// MaxChannels bounds how many channels can be joined at once; default
	// DefaultMaxChannels.
	MaxChannels int
	// QueueData leaves what arrives in the socket while no reply is
	// awaited: the tunnel then wakes nobody for each Multicast Data
	// packet, and what is queued is read in batches, at each of Run's
	// timers, while a reply is awaited and whenever Drain is called.
	// Packets, LastData and Status count what has been read, so call
	// Drain before them; LastData is then when a packet was read, not
	// when it arrived. ICMP errors are still handled as they come. The
	// receive buffer is enlarged (up to the system's maximum), and the
	// datagrams the kernel drops for want of room are counted in
	// TunnelStatus.Dropped. Only on Linux; elsewhere every datagram is
	// read as it comes and Drain does nothing.
	QueueData bool
}

func (o *TunnelOptions) setDefaults() {
	if o.ReplyTimeout <= 0 {
		o.ReplyTimeout = DefaultTimeout
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = DefaultMaxBackoff
	}
	if o.MaxMissedQueries <= 0 {
		o.MaxMissedQueries = DefaultMaxMissedQueries
	}
	if o.LimitHoldDown <= 0 {
		o.LimitHoldDown = DefaultLimitHoldDown
	}
	if o.MaxChannels <= 0 {
		o.MaxChannels = DefaultMaxChannels
	}
}

// TunnelStatus is a snapshot of a Tunnel.
type TunnelStatus struct {
	State TunnelState
	// Since is when State was entered.
	Since time.Time
	// Relay is the advertised relay with the target's port, where
	// Requests, Updates and Teardowns go; zero before the first
	// Advertisement.
	Relay netip.AddrPort
	// Err is the last failure (ErrNoAdvertisement, ErrNoQuery,
	// ErrLimited, ErrRelayFamily, a refused port...); a Query without L
	// clears it.
	Err error
	// Query is the last Query accepted; its MAC and nonce are echoed in
	// Updates.
	Query Query
	// Channels is how many channels are joined.
	Channels int
	// Restarts counts returns to Discovery after an Advertisement.
	Restarts uint64
	// Requests and Updates sent; Queries and Data messages taken.
	Requests, Queries, Updates, Data uint64
	// Ignored counts well-formed messages that were not expected: stale
	// nonces, Data for channels not joined, Data while the tunnel is not
	// established or from elsewhere than the relay, types only relays
	// take.
	Ignored uint64
	// Bad counts datagrams that did not parse.
	Bad uint64
	// Dropped counts the datagrams the kernel dropped because the
	// socket's receive buffer was full, as reported with the datagrams
	// read after them (Linux; always 0 elsewhere).
	Dropped uint64
}

// Errors reported in TunnelStatus.Err and by Tunnel methods.
var (
	ErrNoAdvertisement = errors.New("amt: no relay advertisement")
	ErrNoQuery         = errors.New("amt: no membership query")
	ErrLimited         = errors.New("amt: relay set the limit flag")
	ErrTunnelClosed    = errors.New("amt: tunnel closed")
	ErrTunnelRunning   = errors.New("amt: tunnel already running")
	ErrChannel         = errors.New("amt: not a source-specific channel")
	ErrTooManyChannels = errors.New("amt: too many channels")
)

// channel is an (S,G) pair, addresses unmapped and without zone.
type channel struct{ s, g netip.Addr }

// newChannel checks that (s, g) is something a gateway can join: a
// multicast group and a unicast source of the same family.
func newChannel(s, g netip.Addr) (channel, error) {
	s, g = s.Unmap().WithZone(""), g.Unmap().WithZone("")
	if !g.IsMulticast() || !s.IsValid() || s.IsMulticast() || s.IsUnspecified() || s.Is4() != g.Is4() {
		return channel{}, fmt.Errorf("%w: (%v, %v)", ErrChannel, s, g)
	}
	return channel{s, g}, nil
}

type channelStats struct {
	packets uint64
	last    time.Time
}

// Tunnel is a long-lived AMT gateway tunnel to one relay, joining any number
// of (S,G) channels and counting the data that arrives for each.
//
// Real relays (amtrelayd) track gateways by IP address alone, so two
// tunnels from one host to one relay take each other's streams: keep one
// Tunnel per relay address and join every channel on it. The Linux driver
// goes further: it sends every Query to the port of the host's first
// Request and takes Updates only with the latest Request's nonce, so a
// handshake with a relay that a Tunnel goes to must make its Request
// through the Tunnel (see Request), not from another socket.
//
// The caller owns every goroutine: NewTunnel opens the socket, Run drives
// the protocol until its context ends or Close is called, and the other
// methods may be called from any goroutine, before, during or after Run.
// On Linux the sockets of all tunnels are read by one goroutine of the
// package (see tunnelio_linux.go), which exists while any tunnel is open.
type Tunnel struct {
	target   netip.AddrPort
	opts     TunnelOptions
	sock     *tsock
	closing  chan struct{} // closed by Close
	done     chan struct{} // closed once the tunnel is finished
	kick     chan struct{} // capacity 1: Run looks at its timers again
	closer   sync.Once     // closes closing
	finisher sync.Once     // runs finish
	errq     errQueue      // hands ICMP errors to queuedError

	// ICMP errors read from the error queue, by whichever goroutine
	// read it, for Run to handle.
	icmpMu sync.Mutex
	icmp   []queuedICMP

	// rmu serializes reading the socket and handling what was read: Run
	// holds it while it runs its timers, the reader (the tunnel poller on
	// Linux) while it handles what arrived, Drain while it reads what is
	// queued. It guards run and the fields up to mu, and is taken before
	// mu.
	rmu        sync.Mutex
	run        tunnelRun
	rclosed    bool     // finished: nothing more is read or handled
	readErrors int      // unexplained read failures in a row
	readErr    error    // the socket failed for good: Run returns it
	rio        tunnelIO // the platform's reading state

	mu        sync.Mutex
	running   bool
	finished  bool
	st        TunnelStatus // State, Since, Relay, Err, Query and counters
	haveQuery bool         // st.Query holds a MAC to use
	queryFrom netip.Addr   // where st.Query came from, unmapped, without zone
	channels  map[channel]*channelStats
	out       []byte // message scratch, used under mu
}

// NewTunnel opens the tunnel's socket (unconnected, wildcard address,
// ephemeral port, the family of target) and returns the Tunnel in state
// TunnelDiscovering; nothing is sent before Run. Close releases the socket,
// whether Run ran or not.
func NewTunnel(target netip.AddrPort, opts TunnelOptions) (*Tunnel, error) {
	addr := target.Addr().Unmap()
	if !addr.IsValid() || target.Port() == 0 {
		return nil, fmt.Errorf("%w: %v", ErrInvalidTarget, target)
	}
	opts.setDefaults()
	readBuffer := 0
	if opts.QueueData {
		readBuffer = tunnelReadBuffer
	}
	sock, err := openTunnelSocket(addr, readBuffer)
	if err != nil {
		return nil, err
	}
	t := &Tunnel{
		target:   netip.AddrPortFrom(addr, target.Port()),
		opts:     opts,
		sock:     sock,
		closing:  make(chan struct{}),
		done:     make(chan struct{}),
		kick:     make(chan struct{}, 1),
		st:       TunnelStatus{State: TunnelDiscovering, Since: time.Now()},
		channels: make(map[channel]*channelStats),
	}
	t.run.t = t
	t.errq.rc, t.errq.handle = sock.rawConn(), t.queuedError
	if err := t.initIO(); err != nil {
		sock.close()
		return nil, err
	}
	return t, nil
}

// queuedICMP is one entry of the socket's error queue.
type queuedICMP struct {
	dst   netip.AddrPort
	errno syscall.Errno
}

// queuedError takes an entry of the socket's error queue, read by whoever
// read the socket or by a send that the error failed, and wakes Run to
// handle it.
func (t *Tunnel) queuedError(dst netip.AddrPort, errno syscall.Errno) {
	if !dst.IsValid() || errno == 0 {
		return
	}
	t.icmpMu.Lock()
	if len(t.icmp) < maxErrQueueDrain {
		t.icmp = append(t.icmp, queuedICMP{dst, errno})
	}
	t.icmpMu.Unlock()
	t.poke()
}

// poke makes Run look at its timers, its ICMP errors and its socket again.
func (t *Tunnel) poke() {
	select {
	case t.kick <- struct{}{}:
	default:
	}
}

// readFailed counts a read failure nothing explains; too many in a row
// fail the socket for good (the caller holds rmu).
func (t *Tunnel) readFailed(err error) {
	if t.readErrors++; t.readErrors > maxReadErrors {
		t.readErr = err
	}
}

// send writes msg to dst, past the ICMP errors of earlier datagrams (see
// errQueue.send).
func (t *Tunnel) send(msg []byte, dst netip.AddrPort) error {
	return t.errq.send(func() error { return t.sock.sendTo(msg, dst) })
}

// LocalAddr returns the socket's local address: the wildcard address and
// the port Requests and Updates come from.
func (t *Tunnel) LocalAddr() netip.AddrPort {
	return t.sock.localAddr()
}

// Join adds the (s, g) channel. Once the tunnel is established it is joined
// at once (ALLOW_NEW_SOURCES), otherwise as soon as a Query arrives. Joining
// a joined channel does nothing.
func (t *Tunnel) Join(s, g netip.Addr) error {
	ch, err := newChannel(s, g)
	if err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.finished {
		return ErrTunnelClosed
	}
	if _, ok := t.channels[ch]; ok {
		return nil
	}
	if len(t.channels) >= t.opts.MaxChannels {
		return ErrTooManyChannels
	}
	t.channels[ch] = &channelStats{}
	if t.st.State == TunnelEstablished {
		t.sendUpdatesLocked([]channel{ch}, AllowNewSources)
	}
	return nil
}

// Leave drops the (s, g) channel and its counters, and tells the relay
// (BLOCK_OLD_SOURCES) if a Query has given the tunnel a MAC. Leaving a
// channel that is not joined does nothing.
func (t *Tunnel) Leave(s, g netip.Addr) {
	ch, err := newChannel(s, g)
	if err != nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.channels[ch]; !ok || t.finished {
		return
	}
	delete(t.channels, ch)
	if t.haveQuery {
		t.sendUpdatesLocked([]channel{ch}, BlockOldSources)
	}
}

// Packets returns how many Multicast Data messages arrived for (s, g)
// since it was joined; 0 for a channel that is not joined. With QueueData,
// only those read so far: see Drain.
func (t *Tunnel) Packets(s, g netip.Addr) uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	if cs := t.channels[channel{s.Unmap().WithZone(""), g.Unmap().WithZone("")}]; cs != nil {
		return cs.packets
	}
	return 0
}

// LastData returns when the last Multicast Data message for (s, g)
// arrived (with QueueData: was read); the zero time if none did or the
// channel is not joined.
func (t *Tunnel) LastData(s, g netip.Addr) time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	if cs := t.channels[channel{s.Unmap().WithZone(""), g.Unmap().WithZone("")}]; cs != nil {
		return cs.last
	}
	return time.Time{}
}

// Status returns a snapshot of the tunnel's state and counters.
func (t *Tunnel) Status() TunnelStatus {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.st
	st.Channels = len(t.channels)
	return st
}

// Close ends the tunnel: if Run is running it is stopped and waited for,
// and either way every channel is left (BLOCK_OLD_SOURCES), a Teardown is
// sent if the relay's Query had the G flag, and the socket is closed.
// Channel counters stay readable. Closing again does nothing.
func (t *Tunnel) Close() error {
	t.closer.Do(func() { close(t.closing) })
	t.mu.Lock()
	running := t.running
	t.mu.Unlock()
	if running {
		// Run waits on closing.
		<-t.done
		return nil
	}
	t.finish()
	return nil
}

// Run drives the tunnel until ctx ends or Close is called, then finishes it
// as Close describes and returns ctx.Err(), or nil after Close. It returns
// another error only if the socket fails for good. A Tunnel runs once:
// after Run returns, calling it again gives ErrTunnelClosed.
//
// The protocol: Discovery to the target, retried with a doubling backoff
// (from ReplyTimeout up to MaxBackoff) until an Advertisement with its
// nonce arrives; then a Request to the advertised relay (P set only if
// every joined channel is IPv6). A Query with the Request's nonce
// establishes the tunnel: an Update goes out for every joined channel with
// that Query's MAC and nonce, and every refresh interval after that a new
// Request goes out and the joins are sent again, with the new Query's MAC
// when it comes, with the previous one if it does not come in time. After
// MaxMissedQueries Requests in a row without a Query, discovery starts
// over. A Query with L stops Updates until LimitHoldDown has passed.
//
// On Linux an ICMP error (port unreachable: ECONNREFUSED) about the
// Discovery or Request awaiting a reply fails it at once with that error,
// and one about an Update starts a Request at once. The socket's error
// queue is read whenever a read or a send fails, so that queued errors
// neither take the receive buffer from the Data that follows nor stop a
// send.
//
// Every reply is accepted from any source, its nonce being what ties it to
// the Discovery or Request: relays answer from other local addresses and
// ports. Multicast Data carries no nonce, so it counts only while the
// tunnel is established, and only from the advertised relay address or
// the address its last Query came from (any port): a relay bound to a
// wildcard address sends from whichever address routes to the gateway,
// and anyone else who learns the tunnel's port could otherwise keep a
// channel's count going.
//
// Run sleeps until its next timer; datagrams are read as they come by a
// reader (on Linux the package's one goroutine for every tunnel, in
// batches), or with QueueData, while no reply is awaited, left in the
// socket (see TunnelOptions). Reading and the timers take turns under one
// lock, so a flood delays a timer by one bounded read at most.
func (t *Tunnel) Run(ctx context.Context) error {
	t.mu.Lock()
	select {
	case <-t.closing:
		t.mu.Unlock()
		return ErrTunnelClosed
	default:
	}
	if t.finished {
		t.mu.Unlock()
		return ErrTunnelClosed
	}
	if t.running {
		t.mu.Unlock()
		return ErrTunnelRunning
	}
	t.running = true
	t.mu.Unlock()

	err := t.startIO()
	if err == nil {
		err = t.loop(ctx)
	}
	t.finish()
	return err
}

// Drain reads what is queued on the tunnel's socket and handles it as Run
// would, so that Packets, LastData and Status count everything that
// arrived before the call. It is for tunnels with QueueData; on others it
// finds little or nothing, since they read as datagrams come. Any goroutine
// may call it, while Run runs or not; it does nothing once the tunnel is
// closed, and nothing on platforms other than Linux.
func (t *Tunnel) Drain() {
	t.rmu.Lock()
	changed := t.drainLocked(time.Now())
	t.rmu.Unlock()
	if changed {
		t.poke()
	}
}

// maxReadErrors bounds how many unexplained read errors in a row Run takes
// before giving up; a healthy socket never returns any.
const maxReadErrors = 100

// maxDatagram is the largest UDP payload: Data can carry a full 1500-byte
// packet and more, and a shorter buffer would truncate silently.
const maxDatagram = 1<<16 - 1

// tunnelReadBuffer is asked for as SO_RCVBUF with QueueData, where the
// platform supports it (Linux caps it at net.core.rmem_max and doubles
// it): data waits there for up to a health check interval or a refresh.
const tunnelReadBuffer = 1 << 20

// maxSleep bounds one wait, whatever the timers say.
const maxSleep = time.Minute

// reading reports whether the tunnel reads what arrives as it comes: always
// without QueueData, and while it awaits a reply (the caller holds rmu).
func (t *Tunnel) reading() bool {
	return !t.opts.QueueData || !queueDataSupported || t.run.waiting != awaitNothing
}

func (t *Tunnel) loop(ctx context.Context) error {
	r := &t.run
	t.rmu.Lock()
	r.discover(time.Now())
	t.rmu.Unlock()
	sleep := time.NewTimer(maxSleep)
	defer sleep.Stop()
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		select {
		case <-t.closing:
			return nil
		default:
		}
		t.rmu.Lock()
		if err := t.readErr; err != nil {
			t.rmu.Unlock()
			return err
		}
		now := time.Now()
		r.takeICMP(now)
		r.tick(now)
		wake := r.wake()
		if latest := now.Add(maxSleep); wake.After(latest) {
			wake = latest
		}
		t.armLocked()
		t.rmu.Unlock()

		sleep.Reset(time.Until(wake))
		select {
		case <-sleep.C:
			// A timer is due: first take what is queued, a late reply or
			// the data that would leave the coming reply no room.
			t.rmu.Lock()
			t.drainLocked(time.Now())
			t.rmu.Unlock()
		case <-t.kick:
		case <-t.closing:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// finish leaves every channel, sends a Teardown if the relay gave the
// gateway fields, closes the socket and marks the tunnel closed, once.
func (t *Tunnel) finish() {
	t.finisher.Do(func() {
		t.rmu.Lock()
		t.rclosed = true
		t.rmu.Unlock()
		t.mu.Lock()
		if t.haveQuery {
			all := make([]channel, 0, len(t.channels))
			for ch := range t.channels {
				all = append(all, ch)
			}
			t.sendUpdatesLocked(all, BlockOldSources)
			if q := t.st.Query; q.Gateway.IsValid() {
				t.out = AppendTeardown(t.out[:0], Teardown{MAC: q.MAC, Nonce: q.Nonce, Gateway: q.Gateway})
				_ = t.send(t.out, t.st.Relay)
			}
		}
		t.finished, t.running = true, false
		t.setStateLocked(TunnelClosed)
		t.mu.Unlock()
		t.stopIO()
		close(t.done)
	})
}

// setStateLocked enters state s (the caller holds mu).
func (t *Tunnel) setStateLocked(s TunnelState) {
	if t.st.State != s {
		t.st.State, t.st.Since = s, time.Now()
	}
}

// updateRecordBytes keeps an Update near 1,250 bytes, below common path
// MTUs: 100 IPv4 records (12 bytes each) or 33 IPv6 ones (36 bytes).
const updateRecordBytes = 1200

// sendUpdatesLocked sends records of type rt for chans, one per channel,
// split by family (IGMPv3 or MLDv2) and into Updates of bounded size, with
// the MAC and nonce of the last Query. The caller holds mu; send errors
// are left to the Request cycle to notice.
func (t *Tunnel) sendUpdatesLocked(chans []channel, rt RecordType) {
	if !t.haveQuery || len(chans) == 0 {
		return
	}
	for _, mld := range []bool{false, true} {
		per := updateRecordBytes / (recordHeaderLen + 8)
		if mld {
			per = updateRecordBytes / (recordHeaderLen + 32)
		}
		recs := make([]GroupRecord, 0, min(per, len(chans)))
		flush := func() {
			if len(recs) == 0 {
				return
			}
			u := Update{MAC: t.st.Query.MAC, Nonce: t.st.Query.Nonce, MLD: mld, Records: recs}
			var err error
			if t.out, err = AppendUpdate(t.out[:0], u); err == nil {
				if err = t.send(t.out, t.st.Relay); err == nil {
					t.st.Updates++
				}
			}
			recs = recs[:0]
		}
		for _, ch := range chans {
			if ch.g.Is6() != mld {
				continue
			}
			recs = append(recs, GroupRecord{Type: rt, Group: ch.g, Sources: []netip.Addr{ch.s}})
			if len(recs) == per {
				flush()
			}
		}
		flush()
	}
}

// pending is the reply a tunnelRun waits for.
type pending uint8

const (
	awaitNothing pending = iota
	awaitAdvertisement
	awaitQuery
)

// tunnelRun holds Run's timers, under the Tunnel's rmu: Run's goroutine
// and Drain touch it. What other methods read lives in Tunnel under mu.
type tunnelRun struct {
	t        *Tunnel
	waiting  pending
	dst      netip.AddrPort // where the Discovery or Request went, without zone
	nonce    uint32         // of the Discovery or Request awaiting a reply
	sentAt   time.Time      // when it was sent
	deadline time.Time      // when its reply counts as missing
	next     time.Time      // when to send the next Discovery or Request
	failures int            // failed exchanges in a row, for the backoff
	refresh  time.Duration
	// nextRefresh is when the joins are due again (established).
	nextRefresh time.Time
	holdUntil   time.Time    // limited
	icmp        []queuedICMP // spare slice for takeICMP
	// asks are the callers of Request waiting for a Query.
	asks []*requestAsk
}

func (r *tunnelRun) state() TunnelState {
	r.t.mu.Lock()
	defer r.t.mu.Unlock()
	return r.t.st.State
}

func (r *tunnelRun) backoff() time.Duration {
	d := r.t.opts.ReplyTimeout << min(r.failures-1, 20)
	return min(d, r.t.opts.MaxBackoff)
}

// discover (re)starts from Discovery, sending at once.
func (r *tunnelRun) discover(now time.Time) {
	r.waiting, r.failures, r.next = awaitNothing, 0, now
	r.t.mu.Lock()
	r.t.setStateLocked(TunnelDiscovering)
	r.t.mu.Unlock()
}

// tick sends what is due and notices replies that did not come.
func (r *tunnelRun) tick(now time.Time) {
	if r.waiting != awaitNothing && !now.Before(r.deadline) {
		r.missed(now, nil)
	}
	switch r.state() {
	case TunnelDiscovering:
		if r.waiting == awaitNothing && !now.Before(r.next) {
			r.sendDiscovery(now)
		}
	case TunnelRequesting, TunnelEstablished:
		if r.waiting == awaitNothing && !now.Before(r.next) {
			r.sendRequest(now)
		}
		// While a Query is awaited the refresh waits for its MAC: the
		// Request and the refresh fall due together, and relays that keep
		// only the latest nonce (the Linux driver) would drop joins with
		// the old one. If the Query does not come, missed() ends the wait.
		if r.state() == TunnelEstablished && r.waiting != awaitQuery && !now.Before(r.nextRefresh) {
			r.refreshJoins(now)
		}
	case TunnelLimited:
		if !now.Before(r.holdUntil) {
			r.discover(now)
			r.sendDiscovery(now)
		}
	}
	r.serveAsks(now)
}

// wake is when tick next has something to do.
func (r *tunnelRun) wake() time.Time {
	if r.waiting != awaitNothing {
		return r.deadline // the refresh waits for the Query, see tick
	}
	switch r.state() {
	case TunnelEstablished:
		if r.nextRefresh.Before(r.next) {
			return r.nextRefresh
		}
	case TunnelLimited:
		return r.holdUntil
	}
	return r.next
}

func (r *tunnelRun) sendDiscovery(now time.Time) {
	r.nonce, r.sentAt, r.dst = newNonce(), now, withoutZone(r.t.target)
	var b [discoveryLen]byte
	if err := r.t.send(AppendDiscovery(b[:0], r.nonce), r.t.target); err != nil {
		r.waiting = awaitAdvertisement
		r.missed(now, err)
		return
	}
	r.waiting, r.deadline = awaitAdvertisement, now.Add(r.t.opts.ReplyTimeout)
}

func (r *tunnelRun) sendRequest(now time.Time) {
	r.nonce, r.sentAt = newNonce(), now
	t := r.t
	t.mu.Lock()
	// P asks for an MLDv2 query; only worth it when every channel is
	// IPv6, since relays may answer with either family anyway.
	mld := len(t.channels) > 0
	for ch := range t.channels {
		mld = mld && ch.g.Is6()
	}
	relay := t.st.Relay
	t.st.Requests++
	t.mu.Unlock()
	r.dst = withoutZone(relay)
	// Every Request answers the callers of Request waiting for one: the
	// relay keeps only the latest nonce, so a second would void this one.
	r.attachAsks()
	var b [requestLen]byte
	if err := t.send(AppendRequest(b[:0], r.nonce, mld), relay); err != nil {
		r.waiting = awaitQuery
		r.missed(now, err)
		return
	}
	r.waiting, r.deadline = awaitQuery, now.Add(t.opts.ReplyTimeout)
}

// missed handles the awaited reply not coming, or the send or the port
// failing (err).
func (r *tunnelRun) missed(now time.Time, err error) {
	kind := r.waiting
	r.waiting = awaitNothing
	r.failures++
	if kind == awaitQuery {
		r.answerMissed(err)
	}
	t := r.t
	t.mu.Lock()
	if err == nil {
		err = ErrNoAdvertisement
		if kind == awaitQuery {
			err = ErrNoQuery
		}
	}
	t.st.Err = err
	restart := kind == awaitQuery && r.failures >= t.opts.MaxMissedQueries
	if restart {
		t.st.Restarts++
	}
	t.mu.Unlock()
	if restart {
		r.discover(now)
		return
	}
	r.next = now.Add(r.backoff())
}

// takeICMP handles the ICMP errors read from the error queue since the
// last call, and reports whether there were any.
func (r *tunnelRun) takeICMP(now time.Time) bool {
	t := r.t
	t.icmpMu.Lock()
	queued := t.icmp
	t.icmp = r.icmp[:0]
	t.icmpMu.Unlock()
	for _, q := range queued {
		r.icmpError(q.dst, icmpOpError(t.sock.network(), t.LocalAddr(), q.dst, q.errno), now)
	}
	r.icmp = queued[:0]
	return len(queued) > 0
}

// icmpError handles an ICMP error (err) about a datagram sent to dst:
// nothing listens there, or it cannot be reached.
func (r *tunnelRun) icmpError(dst netip.AddrPort, err error, now time.Time) {
	if r.waiting != awaitNothing && dst == r.dst {
		r.missed(now, err)
		return
	}
	t := r.t
	t.mu.Lock()
	updateFailed := t.st.State == TunnelEstablished && dst == withoutZone(t.st.Relay)
	if updateFailed {
		t.st.Err = err
	}
	t.mu.Unlock()
	// An Update was refused: find out about the relay now rather than at
	// the next refresh. Otherwise the error is about an exchange that has
	// already failed, and a retry is scheduled.
	if updateFailed {
		r.next = now
	}
}

func withoutZone(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().WithZone(""), ap.Port())
}

// refreshJoins re-sends every join with the last Query's MAC.
func (r *tunnelRun) refreshJoins(now time.Time) {
	t := r.t
	t.mu.Lock()
	all := make([]channel, 0, len(t.channels))
	for ch := range t.channels {
		all = append(all, ch)
	}
	t.sendUpdatesLocked(all, AllowNewSources)
	t.mu.Unlock()
	r.nextRefresh = now.Add(r.refresh)
}

// receive handles one datagram from anywhere; from is its source address.
func (r *tunnelRun) receive(b []byte, from netip.Addr, now time.Time) {
	t := r.t
	if len(b) == 0 || b[0]>>4 != 0 {
		t.count(func(st *TunnelStatus) { st.Bad++ })
		return
	}
	switch b[0] {
	case typeAdvertisement:
		nonce, relay, err := ParseAdvertisement(b)
		switch {
		case err != nil:
			t.count(func(st *TunnelStatus) { st.Bad++ })
		case r.waiting != awaitAdvertisement || nonce != r.nonce:
			t.count(func(st *TunnelStatus) { st.Ignored++ })
		default:
			r.advertised(relay.Unmap(), now)
		}
	case typeQuery:
		q, err := ParseQuery(b)
		switch {
		case err != nil:
			t.count(func(st *TunnelStatus) { st.Bad++ })
		case r.waiting != awaitQuery || q.Nonce != r.nonce:
			t.count(func(st *TunnelStatus) { st.Ignored++ })
		default:
			r.queried(q, from, now)
		}
	case typeData:
		d, err := ParseData(b)
		if err != nil {
			t.count(func(st *TunnelStatus) { st.Bad++ })
			return
		}
		t.mu.Lock()
		if cs := t.channels[channel{d.Source.Addr().Unmap(), d.Group.Addr().Unmap()}]; cs != nil && t.fromRelayLocked(from) {
			cs.packets++
			cs.last = now
			t.st.Data++
		} else {
			t.st.Ignored++
		}
		t.mu.Unlock()
	default:
		t.count(func(st *TunnelStatus) { st.Ignored++ })
	}
}

func (t *Tunnel) count(f func(*TunnelStatus)) {
	t.mu.Lock()
	f(&t.st)
	t.mu.Unlock()
}

// fromRelayLocked reports whether Data from address from is the relay's:
// the tunnel is established and from is the advertised relay address or
// the last Query's source (the caller holds mu).
func (t *Tunnel) fromRelayLocked(from netip.Addr) bool {
	if t.st.State != TunnelEstablished {
		return false
	}
	from = from.Unmap().WithZone("")
	return from == t.st.Relay.Addr() || from == t.queryFrom
}

// advertised moves on to the Request step with the advertised relay.
func (r *tunnelRun) advertised(relay netip.Addr, now time.Time) {
	t := r.t
	if !usableRelay(relay) {
		r.missed(now, fmt.Errorf("%w: advertised %v", ErrNoAdvertisement, relay))
		return
	}
	if relay.Is4() != t.target.Addr().Is4() {
		// Unreachable from this socket.
		r.missed(now, ErrRelayFamily)
		return
	}
	r.waiting, r.failures, r.next = awaitNothing, 0, now
	t.mu.Lock()
	t.st.Relay = netip.AddrPortFrom(relay, t.target.Port())
	t.setStateLocked(TunnelRequesting)
	t.mu.Unlock()
}

// queried takes the Query for the pending Request, which came from from.
func (r *tunnelRun) queried(q Query, from netip.Addr, now time.Time) {
	r.waiting, r.failures = awaitNothing, 0
	r.answerQuery(q, from, now)
	t := r.t
	t.mu.Lock()
	defer t.mu.Unlock()
	t.st.Query, t.haveQuery = q, true
	t.queryFrom = from.Unmap().WithZone("")
	t.st.Queries++
	if q.Limit {
		t.st.Err = ErrLimited
		t.setStateLocked(TunnelLimited)
		r.holdUntil = now.Add(t.opts.LimitHoldDown)
		return
	}
	t.st.Err = nil
	t.setStateLocked(TunnelEstablished)
	r.refresh = t.opts.Refresh
	if r.refresh <= 0 {
		r.refresh = q.QQI
		if r.refresh <= 0 {
			r.refresh = MaxRefresh
		}
		r.refresh = min(max(r.refresh, MinRefresh), MaxRefresh)
	}
	all := make([]channel, 0, len(t.channels))
	for ch := range t.channels {
		all = append(all, ch)
	}
	t.sendUpdatesLocked(all, AllowNewSources)
	r.nextRefresh = now.Add(r.refresh)
	r.next = r.sentAt.Add(r.refresh)
}
