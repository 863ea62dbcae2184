package pipeline

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-media/sluice/pipeline/config"
)

// Default bounds of the admission path, used when server sets none.
const (
	DefaultAuthTimeout   = 5 * time.Second
	DefaultNotifyTimeout = 2 * time.Second
)

// Role is what an admitted client does with its stream.
type Role string

// The roles of a session.
const (
	RolePublish Role = "publish"
	RolePlay    Role = "play"
)

// Request is one client's request to publish or play a stream, as every
// ingest and output hands it to the Gate.
type Request struct {
	// Path is the stream path, "app/name".
	Path string
	// Client identifies the client: protocol, address, query string.
	Client ClientInfo
	// URL is the full request URL for HTTP protocols, "" otherwise.
	URL string
}

// Refusal is the error the Gate returns when it turns a request away. Every
// protocol maps it to its own answer from Reason alone (HTTPStatus here, the
// RTMP status codes in ingest/rtmp), so a reason means the same thing on
// every port.
type Refusal struct {
	// Reason is one of the Reason* constants; it is also the label of
	// sluice_sessions_refused_total.
	Reason string
	// Redirect is where an authorizer sent the client, for ReasonRedirected.
	Redirect string
	// RedirectBase, for ReasonRedirected when Redirect is "", maps a
	// protocol family ("rtmp", "http") to the base URL of the server the
	// client should ask instead ("rtmp://host:port", "http://host:port"):
	// each protocol appends the client's own path and query, so that one
	// refusal sends every waiting player, whatever its protocol, to the
	// same stream elsewhere (a cluster edge redirecting to the owner).
	RedirectBase map[string]string
	// Err is the cause, for logs and errors.Is.
	Err error
}

// Refusal reasons.
const (
	ReasonBadPath     = "bad_path"     // the path is not a valid stream path
	ReasonNoPipeline  = "no_pipeline"  // no pipeline's match covers the path
	ReasonDenied      = "denied"       // the authorizer said no
	ReasonRedirected  = "redirected"   // the authorizer sent the client elsewhere
	ReasonBusy        = "busy"         // another publisher holds the stream
	ReasonNotFound    = "not_found"    // no publisher came within wait_publisher
	ReasonUnavailable = "unavailable"  // the stream's on-demand source failed
	ReasonShutdown    = "shutdown"     // the server is stopping
	ReasonCanceled    = "canceled"     // the client left while waiting
	ReasonRefused     = "refused"      // the kind refused it (play disabled, ...)
	ReasonLoop        = "loop"         // the request came back around a relay loop
	ReasonStopped     = "stopped"      // the stream was stopped by an operator
	ReasonUnsupported = "unsupported"  // the stream cannot be served in this form
	ReasonLimit       = "limit"        // one of the server's limits (max_streams, ...) is reached
	ReasonInternal    = "server_error" // an unexpected failure
)

func (r *Refusal) Error() string {
	if r.Err == nil {
		return r.Reason
	}
	return r.Err.Error()
}

func (r *Refusal) Unwrap() error { return r.Err }

// Refuse returns a Refusal for reason, with err as its cause.
func Refuse(reason string, err error) *Refusal { return &Refusal{Reason: reason, Err: err} }

// RefusalOf returns the Refusal in err's chain, or one that classifies err
// by the hub's sentinel errors.
func RefusalOf(err error) *Refusal {
	var r *Refusal
	if errors.As(err, &r) {
		return r
	}
	return &Refusal{Reason: reasonOf(err), Err: err}
}

func reasonOf(err error) string {
	switch {
	case errors.Is(err, ErrStreamBusy):
		return ReasonBusy
	case errors.Is(err, ErrNoPipeline):
		return ReasonNoPipeline
	case errors.Is(err, ErrStreamNotFound), errors.Is(err, ErrStreamEnded):
		return ReasonNotFound
	case errors.Is(err, ErrUpstreamUnavailable):
		return ReasonUnavailable
	case errors.Is(err, ErrHubClosed):
		return ReasonShutdown
	case errors.Is(err, ErrStreamStopped):
		return ReasonStopped
	case errors.Is(err, ErrDenied):
		return ReasonDenied
	case errors.Is(err, ErrTooManyStreams), errors.Is(err, ErrTooManyPublishers), errors.Is(err, ErrTooManyPulls):
		return ReasonLimit
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return ReasonCanceled
	}
	return ReasonInternal
}

// HTTPStatus is the status an HTTP ingest or output answers for a refusal.
func (r *Refusal) HTTPStatus() int {
	switch r.Reason {
	case ReasonBadPath:
		return http.StatusBadRequest
	case ReasonDenied:
		return http.StatusForbidden
	case ReasonRedirected:
		return http.StatusFound
	case ReasonBusy, ReasonStopped:
		return http.StatusConflict
	case ReasonNoPipeline, ReasonNotFound, ReasonUnsupported:
		return http.StatusNotFound
	case ReasonUnavailable:
		return http.StatusBadGateway
	case ReasonShutdown, ReasonLimit:
		return http.StatusServiceUnavailable
	case ReasonCanceled:
		// The client is gone; nginx's 499 would be as good, but a
		// standard code keeps access logs readable.
		return http.StatusRequestTimeout
	case ReasonRefused:
		return http.StatusForbidden
	case ReasonLoop:
		return http.StatusLoopDetected
	}
	return http.StatusInternalServerError
}

// WriteHTTP answers an HTTP request that was refused: a 302 to the
// redirect (Redirect, or RedirectBase["http"] followed by the request's
// path and query), or the refusal's status with its reason as the body. A
// redirect with nowhere for HTTP to go is a 502: the client cannot follow
// it. Refusals close the connection, since a publisher's unread body may
// follow.
func (r *Refusal) WriteHTTP(w http.ResponseWriter, req *http.Request) {
	w.Header().Set("Connection", "close")
	status := r.HTTPStatus()
	if r.Reason == ReasonRedirected {
		to := r.Redirect
		if to == "" && r.RedirectBase["http"] != "" {
			to = strings.TrimSuffix(r.RedirectBase["http"], "/") + req.URL.RequestURI()
		}
		if to != "" {
			http.Redirect(w, req, to, http.StatusFound)
			return
		}
		status = http.StatusBadGateway
	}
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	http.Error(w, r.Error(), status)
}

// Gate is the one admission path of the server: every ingest asks it to
// publish and every output asks it to play. It checks the path, resolves the
// pipeline, asks the pipeline's authorizer for connect and then the action,
// claims the stream in the hub, and returns a handle whose Finish notifies
// the authorizer (unpublish or stop) within a bounded time. It counts every
// session, refusal and close under the same names for every protocol.
//
// A Gate belongs to the Runtime and outlives builds: a reload gives it the
// new file's authorizers and timeouts (Update), which apply from the next
// decision on, so stages a reload leaves untouched admit under the new
// rules too.
type Gate struct {
	hub  *Hub
	conf atomic.Pointer[GateOptions]
	m    gateMetrics
	// reg holds the open sessions and the stopped paths (clients.go).
	reg registry
	// hits counts the limits clients hit, pubs the publishers of each
	// client address (limits.go).
	hits *limitHits
	pubs publishers
}

type gateMetrics struct {
	sessions *CounterVec
	refused  *CounterVec
	closed   *CounterVec
	sent     *CounterVec
	received *CounterVec
	active   *GaugeVec
}

// GateOptions configure a Gate.
type GateOptions struct {
	// Auth returns the authorizer of a pipeline (by name); nil, or a nil
	// result, allows everything.
	Auth func(pipeline string) Authorizer
	// Node is this server's name, passed to authorizers.
	Node string
	// AuthTimeout bounds each authorizer decision.
	AuthTimeout time.Duration
	// NotifyTimeout bounds each unpublish/stop notification.
	NotifyTimeout time.Duration
	// Limits are the server's limits (the limits block); the zero value
	// bounds no count and takes the default of every size and time.
	Limits config.Limits
}

// NewGate returns the admission path over hub.
func NewGate(hub *Hub, m *Metrics, o GateOptions) *Gate {
	g := &Gate{
		hub: hub,
		m: gateMetrics{
			sessions: m.Counter("sluice_sessions_total", "Publish and play sessions admitted, by protocol and role.", "proto", "role"),
			refused:  m.Counter("sluice_sessions_refused_total", "Publish and play requests refused, by protocol, role and reason.", "proto", "role", "reason"),
			closed:   m.Counter("sluice_sessions_closed_total", "Publish and play sessions ended, by protocol, role and cause.", "proto", "role", "cause"),
			sent:     m.Counter("sluice_sent_bytes_total", "Media bytes sent to players, by protocol.", "proto"),
			received: m.Counter("sluice_received_bytes_total", "Media bytes received from publishers, by protocol.", "proto"),
			active:   m.Gauge("sluice_sessions", "Publish and play sessions open, by protocol and role.", "proto", "role"),
		},
		hits: newLimitHits(m),
	}
	g.Update(o)
	return g
}

// Update replaces the gate's options; decisions already under way finish
// with the old ones.
func (g *Gate) Update(o GateOptions) {
	if o.AuthTimeout <= 0 {
		o.AuthTimeout = DefaultAuthTimeout
	}
	if o.NotifyTimeout <= 0 {
		o.NotifyTimeout = DefaultNotifyTimeout
	}
	o.Limits = limitDefaults(o.Limits)
	g.hub.setLimits(o.Limits.MaxStreams, o.Limits.MaxPulls)
	g.conf.Store(&o)
}

// Hub returns the hub the gate admits into.
func (g *Gate) Hub() *Hub { return g.hub }

// Authorizer returns the authorizer of the pipeline that owns path:
// AllowAll when it has none or no pipeline owns path.
func (g *Gate) Authorizer(path string) Authorizer {
	if auth := g.conf.Load().Auth; auth != nil {
		if opts, ok := g.hub.Resolve(path); ok {
			if a := auth(opts.Pipeline); a != nil {
				return a
			}
		}
	}
	return AllowAll{}
}

// Open reports whether path's pipeline admits everyone (it has no
// authorizer), so that outputs can skip work such as signing URLs.
func (g *Gate) Open(path string) bool {
	_, open := g.Authorizer(path).(AllowAll)
	return open
}

// Check runs the admission decision for action on req without claiming
// anything: the path, the pipeline, connect, then the action's hook. HLS
// playlist requests use it directly; Publish and Play start with it.
func (g *Gate) Check(ctx context.Context, action Action, req Request) error {
	role := roleOf(action)
	if err := ValidPath(req.Path); err != nil {
		return g.refused(req, role, Refuse(ReasonBadPath, err))
	}
	opts, ok := g.hub.Resolve(req.Path)
	if !ok {
		return g.refused(req, role, Refuse(ReasonNoPipeline, fmt.Errorf("%s: %w", req.Path, ErrNoPipeline)))
	}
	auth := g.Authorizer(req.Path)
	if _, open := auth.(AllowAll); open {
		return nil
	}
	ar := g.authRequest(req, opts.Pipeline)
	for _, a := range [...]Action{ActionConnect, action} {
		ar.Action = a
		actx, cancel := context.WithTimeout(ctx, g.conf.Load().AuthTimeout)
		d := auth.Authorize(actx, ar)
		cancel()
		if d.Allow {
			continue
		}
		r := &Refusal{Reason: ReasonDenied, Err: fmt.Errorf("%s %s: %s: %w", a, req.Path, d.Why(), ErrDenied)}
		if d.Redirect != "" {
			r.Reason, r.Redirect = ReasonRedirected, d.Redirect
			r.Err = fmt.Errorf("%s %s: redirected to %s: %w", a, req.Path, d.Redirect, ErrDenied)
		}
		return g.refused(req, role, r)
	}
	return nil
}

// Publish admits req as the publisher of its stream. The returned
// Publisher's Finish (or Close) releases the stream and tells the
// authorizer the publisher left. A refusal is a *Refusal.
func (g *Gate) Publish(ctx context.Context, req Request) (*Publisher, error) {
	// A stopped path is refused before the authorizer is asked: the
	// operator's word stands whatever the plugin would say.
	if err := g.held(req.Path); err != nil {
		return nil, g.refused(req, RolePublish, Refuse(ReasonStopped, err))
	}
	if err := g.Check(ctx, ActionPublish, req); err != nil {
		return nil, err
	}
	lim := g.Limits()
	release, err := g.pubs.take(req.Client.Remote, &lim)
	if err != nil {
		g.CountLimit(LimitPublishersPerIP)
		return nil, g.refused(req, RolePublish, RefusalOf(fmt.Errorf("publish %s: %w", req.Path, err)))
	}
	pub, err := g.hub.Publish(req.Path, req.Client)
	if err != nil {
		release()
		g.countAdmissionLimit(err)
		return nil, g.refused(req, RolePublish, RefusalOf(fmt.Errorf("publish %s: %w", req.Path, err)))
	}
	pub.sess = g.open(ctx, req, RolePublish, ActionUnpublish, pub.s)
	pub.sess.release = release
	return pub, nil
}

// Play admits req as a player of its stream and returns its reader,
// positioned by the GOP cache. A player may come before the publisher: Play
// waits up to the pipeline's wait_publisher (and starts the stream's
// on-demand source, if it has one). The Reader's Finish (or Close) tells the
// authorizer the player left. A refusal is a *Refusal.
func (g *Gate) Play(ctx context.Context, req Request) (*Reader, error) {
	if err := g.Check(ctx, ActionPlay, req); err != nil {
		return nil, err
	}
	rd, err := g.hub.Play(ctx, req.Path, req.Client)
	if err != nil {
		g.countAdmissionLimit(err)
		return nil, g.refused(req, RolePlay, RefusalOf(fmt.Errorf("play %s: %w", req.Path, err)))
	}
	rd.sess = g.open(ctx, req, RolePlay, ActionStop, rd.s)
	return rd, nil
}

// countAdmissionLimit counts the limit the hub's error names, if any. The
// protocol logs the refusal, whose error names the limit.
func (g *Gate) countAdmissionLimit(err error) {
	switch {
	case errors.Is(err, ErrTooManyStreams):
		g.CountLimit(LimitStreams)
	case errors.Is(err, ErrTooManyPulls):
		g.CountLimit(LimitPulls)
	}
}

func (g *Gate) refused(req Request, role Role, r *Refusal) *Refusal {
	g.m.refused.With(req.Client.Proto, string(role), r.Reason).Inc()
	return r
}

func (g *Gate) authRequest(req Request, pipeline string) AuthRequest {
	return AuthRequest{Proto: req.Client.Proto, Remote: req.Client.Remote, Path: req.Path,
		Query: req.Client.Query, Pipeline: pipeline, Node: g.conf.Load().Node, URL: req.URL}
}

// open starts the bookkeeping of an admitted session of stream st and
// lists it among the clients.
func (g *Gate) open(ctx context.Context, req Request, role Role, leave Action, st *Stream) *session {
	proto := req.Client.Proto
	s := &session{g: g, req: req, role: role, leave: leave, ctx: context.WithoutCancel(ctx), start: time.Now(),
		stream: st, ended: make(chan struct{})}
	if role == RolePublish {
		s.bytes = g.m.received.With(proto)
	} else {
		s.bytes = g.m.sent.With(proto)
	}
	g.m.sessions.With(proto, string(role)).Inc()
	s.active = g.m.active.With(proto, string(role))
	s.active.Add(1)
	g.reg.add(s)
	return s
}

func roleOf(a Action) Role {
	if a == ActionPublish {
		return RolePublish
	}
	return RolePlay
}

// session is the admission bookkeeping of one publisher or player.
type session struct {
	g      *Gate
	req    Request
	role   Role
	leave  Action
	ctx    context.Context // values only: the notification must outlive a cancelled session
	start  time.Time
	bytes  *Counter
	active *Gauge
	n      atomic.Int64
	done   atomic.Bool

	// The client registry's part (clients.go).
	id     string
	seq    uint64
	stream *Stream
	ended  chan struct{} // closed by finish
	// direct is the reader's count of bytes the stream's writers put on
	// its socket (latency mode), set while they may.
	direct atomic.Pointer[atomic.Int64]
	mu     sync.Mutex
	cut    func() // how the protocol ends the session; nil: it cannot be kicked
	kicked string // the cause of a kick, "" if none
	// release gives back the publisher's place under
	// max_publishers_per_ip; nil for players.
	release func()
}

// add counts n bytes of the session.
func (s *session) add(n int64) {
	if s == nil || n <= 0 {
		return
	}
	s.n.Add(n)
	s.bytes.Add(uint64(n))
}

// finish counts the close and notifies the authorizer, once.
func (s *session) finish(cause string) {
	if s == nil || s.done.Swap(true) {
		return
	}
	if cause == "" {
		cause = "closed"
	}
	s.mu.Lock()
	if s.kicked != "" {
		// Whatever the protocol saw (a closed socket, a cut body), the
		// session ended because an operator ended it.
		cause = s.kicked
	}
	s.cut = nil
	s.mu.Unlock()
	s.g.reg.remove(s)
	if s.release != nil {
		s.release()
	}
	if s.role == RolePlay && s.stream != nil {
		s.stream.sent.Add(s.n.Load())
	}
	proto := s.req.Client.Proto
	s.g.m.closed.With(proto, string(s.role), cause).Inc()
	s.active.Add(-1)
	close(s.ended) // counted: a kick's caller may read the counters
	auth := s.g.Authorizer(s.req.Path)
	if _, open := auth.(AllowAll); open {
		return
	}
	opts, _ := s.g.hub.Resolve(s.req.Path)
	ar := s.g.authRequest(s.req, opts.Pipeline)
	ar.Action = s.leave
	ctx, cancel := context.WithTimeout(s.ctx, s.g.conf.Load().NotifyTimeout)
	defer cancel()
	auth.Notify(ctx, ar)
}

// ErrUpstreamUnavailable means a stream's on-demand source could not
// deliver it.
var ErrUpstreamUnavailable = errors.New("upstream unavailable")
