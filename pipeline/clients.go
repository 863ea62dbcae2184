package pipeline

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Clients: every session the Gate admits (publishers and players, every
// protocol) is listed in its registry from admission to Finish, so that an
// operator can see it and end it. Listing costs a map insert at admission
// and a delete at the end, nothing per frame. A session is ended from
// outside through the hook its protocol registered (OnKick): closing its
// connection, cancelling its context. The Gate also keeps the paths an
// operator stopped, refused to publishers for a while.

// Causes of a session that an operator ended, as
// sluice_sessions_closed_total counts them whatever the protocol saw.
const (
	// CauseKicked: the client was kicked (POST /api/v1/clients/{id}/kick).
	CauseKicked = "kicked"
	// CauseStopped: the stream was stopped (POST
	// /api/v1/streams/{path}/stop); its publisher was disconnected.
	CauseStopped = "stopped"
)

// Errors of the operator's actions.
var (
	// ErrClientNotFound means no open session has the id.
	ErrClientNotFound = errors.New("no such client")
	// ErrNotKickable means the session's protocol gave no way to end it
	// (see Publisher.OnKick): a relay of the server's own, say.
	ErrNotKickable = errors.New("this client's protocol gives no way to disconnect it")
	// ErrStreamStopped means an operator stopped the stream and its path
	// is still held: publishing it is refused until the hold ends.
	ErrStreamStopped = errors.New("stream stopped by an operator")
)

// ClientSession is one admitted session, as GET /api/v1/clients shows it.
type ClientSession struct {
	// ID identifies the session while it is open: a short decimal string,
	// never reused by the process.
	ID     string `json:"id"`
	Proto  string `json:"proto"`
	Remote string `json:"remote"`
	Stream string `json:"stream"`
	Role   Role   `json:"role"`
	// Bytes is what the session received (publish) or sent (play) so
	// far: wire bytes, counted as the protocol reports them (an RTMP
	// publisher's at least every half idle_timeout).
	Bytes int64     `json:"bytes"`
	Since time.Time `json:"since"`
	// Kickable says whether the session's protocol registered a way to
	// disconnect it.
	Kickable bool `json:"kickable"`
}

// registry is the Gate's table of open sessions and stopped paths. Its
// zero value is ready to use.
type registry struct {
	mu       sync.Mutex
	next     uint64
	sessions map[string]*session
	holds    map[string]time.Time // stopped path -> until when publishing is refused
}

func (r *registry) add(s *session) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.sessions == nil {
		r.sessions = map[string]*session{}
	}
	r.next++
	s.seq = r.next
	s.id = strconv.FormatUint(r.next, 10)
	r.sessions[s.id] = s
}

func (r *registry) remove(s *session) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.sessions, s.id)
}

// list returns the open sessions (of stream, unless it is ""), in the
// order they were admitted.
func (r *registry) list(stream string) []*session {
	r.mu.Lock()
	out := make([]*session, 0, len(r.sessions))
	for _, s := range r.sessions {
		if stream == "" || s.req.Path == stream {
			out = append(out, s)
		}
	}
	r.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].seq < out[j].seq })
	return out
}

func (r *registry) get(id string) *session {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sessions[id]
}

// info is the session as the API shows it.
func (s *session) info() ClientSession {
	s.mu.Lock()
	kickable := s.cut != nil
	s.mu.Unlock()
	return ClientSession{ID: s.id, Proto: s.req.Client.Proto, Remote: s.req.Client.Remote, Stream: s.req.Path,
		Role: s.role, Bytes: s.sent(), Since: s.start, Kickable: kickable}
}

// sent returns the session's bytes, with those a stream's writers put on
// a latency-mode player's socket.
func (s *session) sent() int64 {
	n := s.n.Load()
	if d := s.direct.Load(); d != nil {
		n += d.Load()
	}
	return n
}

// onKick registers cut (see Publisher.OnKick).
func (s *session) onKick(cut func()) (stop func()) {
	if s == nil {
		return func() {}
	}
	s.mu.Lock()
	if s.kicked != "" {
		s.mu.Unlock()
		cut()
		return func() {}
	}
	if s.done.Load() {
		s.mu.Unlock()
		return func() {}
	}
	s.cut = cut
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		s.cut = nil
		s.mu.Unlock()
	}
}

// kick ends the session with cause through its hook and reports whether
// it had one. With mark, the cause is recorded even without a hook (the
// session ends by other means: a stopped stream's publisher sees the
// stream end).
func (s *session) kick(cause string, mark bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.kicked != "" {
		return true
	}
	if s.cut == nil && !mark {
		return false
	}
	s.kicked = cause
	if s.cut == nil {
		return false
	}
	// Under the lock, so that the hook's stop (a connection handed back
	// to net/http) cannot return while the hook runs.
	cut := s.cut
	s.cut = nil
	cut()
	return true
}

func (s *session) kickCause() string {
	if s == nil {
		return ""
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.kicked
}

// OnKick registers cut as the way to end this publisher's session when an
// operator kicks the client or stops its stream: it must make the session
// end soon (close the connection, cancel the session's context, pull in a
// read deadline) and must not block. It runs at most once, on the
// operator's goroutine, or at once if the session was kicked already. The
// returned stop unregisters it; once stop has returned, cut is neither
// running nor going to run, so call it before handing the connection back
// (an HTTP handler returning). A session that registers nothing cannot be
// kicked (the API answers 409), though stopping its stream ends it all the
// same. Publishers the Gate did not admit ignore it.
func (p *Publisher) OnKick(cut func()) (stop func()) { return p.sess.onKick(cut) }

// KickCause returns CauseKicked or CauseStopped when an operator ended
// the session, "" otherwise; the protocol logs it as the session's cause
// (Finish records it whatever cause it is given).
func (p *Publisher) KickCause() string { return p.sess.kickCause() }

// OnKick is Publisher.OnKick for a player. Play registers it; an output
// that writes its players with Play has nothing to do.
func (r *Reader) OnKick(cut func()) (stop func()) { return r.sess.onKick(cut) }

// KickCause is Publisher.KickCause for a player.
func (r *Reader) KickCause() string { return r.sess.kickCause() }

// hookDirect lets the session count the bytes a stream's writers put on
// the player's socket; nil stops it, before they are added to the
// session's own count.
func (s *session) hookDirect(n *atomic.Int64) {
	if s != nil {
		s.direct.Store(n)
	}
}

// Clients returns the open sessions, of stream unless it is "", in the
// order they were admitted.
func (g *Gate) Clients(stream string) []ClientSession {
	list := g.reg.list(stream)
	out := make([]ClientSession, len(list))
	for i, s := range list {
		out[i] = s.info()
	}
	return out
}

// Client returns the open session id.
func (g *Gate) Client(id string) (ClientSession, bool) {
	s := g.reg.get(id)
	if s == nil {
		return ClientSession{}, false
	}
	return s.info(), true
}

// Kick disconnects the client id, whatever its protocol, and waits until
// its session has ended or ctx ends; closed reports which. Its session
// ends with cause "kicked". It fails with ErrClientNotFound and
// ErrNotKickable. A kicked client may come back at once: to keep a
// publisher out, stop its stream.
func (g *Gate) Kick(ctx context.Context, id string) (c ClientSession, closed bool, err error) {
	s := g.reg.get(id)
	if s == nil {
		return ClientSession{}, false, fmt.Errorf("client %s: %w", id, ErrClientNotFound)
	}
	c = s.info()
	if !s.kick(CauseKicked, false) {
		return c, false, fmt.Errorf("client %s (%s): %w", id, c.Proto, ErrNotKickable)
	}
	select {
	case <-s.ended:
		return c, true, nil
	case <-ctx.Done():
		return c, false, nil
	}
}

// StopResult is what stopping a stream did.
type StopResult struct {
	// Path is the stream stopped.
	Path string `json:"path"`
	// Hold is how long publishing it is refused, HeldUntil until when.
	Hold      string    `json:"hold"`
	HeldUntil time.Time `json:"held_until,omitzero"`
	// Publisher is the client id of the publisher disconnected, "" if it
	// had none (a stream held in its reconnect grace).
	Publisher string `json:"publisher,omitempty"`
	// Readers is how many readers were told the stream ended.
	Readers int64 `json:"readers"`
}

// Stop ends the stream at path as a publisher leaving with no grace would
// (players are told it ended), disconnects its publisher (cause
// "stopped"), and refuses to publish the path for hold (none when hold
// is 0), whatever the protocol: the refusal's reason is "stopped". It
// fails with ErrStreamNotFound when there is no such stream.
func (g *Gate) Stop(path string, hold time.Duration) (StopResult, error) {
	st := g.hub.Stream(path)
	if st == nil {
		return StopResult{}, fmt.Errorf("%s: %w", path, ErrStreamNotFound)
	}
	res := StopResult{Path: path, Hold: hold.String(), Readers: st.readers.Load()}
	if hold > 0 {
		// Before the publisher is cut, so that its immediate return is
		// refused.
		res.HeldUntil = time.Now().Add(hold)
		g.reg.mu.Lock()
		if g.reg.holds == nil {
			g.reg.holds = map[string]time.Time{}
		}
		g.reg.holds[path] = res.HeldUntil
		g.reg.mu.Unlock()
	}
	var pub *session
	for _, s := range g.reg.list(path) {
		if s.role == RolePublish && s.stream == st {
			pub = s
			res.Publisher = s.id
		}
	}
	// The stream first: its players are told it ended, and a publisher
	// without a hook of its own sees its next Write fail.
	st.end("stopped by an operator")
	if pub != nil {
		pub.kick(CauseStopped, true)
	}
	return res, nil
}

// held returns ErrStreamStopped, with the time left, while path is held by
// a Stop; it forgets holds that ended.
func (g *Gate) held(path string) error {
	g.reg.mu.Lock()
	defer g.reg.mu.Unlock()
	until, ok := g.reg.holds[path]
	if !ok {
		return nil
	}
	left := time.Until(until)
	if left <= 0 {
		delete(g.reg.holds, path)
		return nil
	}
	return fmt.Errorf("publish %s: %w; publishing it is refused for %s more", path, ErrStreamStopped, left.Round(time.Second))
}

// streamSessions returns, by stream path, the open players by protocol and
// the bytes their sessions sent so far.
func (g *Gate) streamSessions() map[string]*streamSessions {
	out := map[string]*streamSessions{}
	for _, s := range g.reg.list("") {
		if s.role != RolePlay {
			continue
		}
		ss := out[s.req.Path]
		if ss == nil {
			ss = &streamSessions{byProto: map[string]int{}}
			out[s.req.Path] = ss
		}
		ss.byProto[s.req.Client.Proto]++
		ss.sent += s.sent()
	}
	return out
}

type streamSessions struct {
	byProto map[string]int
	sent    int64
}

// Snapshot returns every stream of the hub as GET /api/v1/streams shows
// it: StreamInfo with its StreamStats, the players and bytes of the
// Gate's sessions included.
func (g *Gate) Snapshot() []StreamInfo {
	now := time.Now()
	per := g.streamSessions()
	list := g.hub.list()
	out := make([]StreamInfo, 0, len(list))
	for _, s := range list {
		out = append(out, g.snapshot(s, now, per[s.path]))
	}
	return out
}

// StreamSnapshot is Snapshot for the stream at path; false if there is
// none.
func (g *Gate) StreamSnapshot(path string) (StreamInfo, bool) {
	s := g.hub.Stream(path)
	if s == nil {
		return StreamInfo{}, false
	}
	return g.snapshot(s, time.Now(), g.streamSessions()[path]), true
}

func (g *Gate) snapshot(s *Stream, now time.Time, ss *streamSessions) StreamInfo {
	info := s.Info()
	info.StreamStats = s.stats(now)
	info.ReadersByProto = map[string]int{}
	if ss != nil {
		info.ReadersByProto = ss.byProto
		info.BytesOut += ss.sent
	}
	return info
}

// list returns the hub's streams, sorted by path.
func (h *Hub) list() []*Stream {
	h.mu.Lock()
	out := make([]*Stream, 0, len(h.streams))
	for _, s := range h.streams {
		out = append(out, s)
	}
	h.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].path < out[j].path })
	return out
}
