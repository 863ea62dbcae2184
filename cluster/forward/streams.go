package forward

import (
	"context"
	"errors"
	"net"
	"net/url"
	"sync"
	"time"

	"github.com/sluice-media/sluice/ingest/rtmp"
	"github.com/sluice-media/sluice/pipeline"
)

// Defaults of Options.
const (
	DefaultRetryMin = time.Second
	DefaultRetryMax = 30 * time.Second
	// DefaultProto is the protocol a forward's readers report
	// (pipeline.ClientInfo.Proto), in the API and the hub's logs.
	DefaultProto = "rtmp-forward"
)

// goodSession is how long a push must have stayed connected for the
// backoff to start again from RetryMin: a target that accepts and then
// drops every session at once is still backed off.
const goodSession = time.Minute

// Options configure Streams. The zero value is usable.
type Options struct {
	// RetryMin and RetryMax bound the exponential backoff between the
	// attempts of one push; DefaultRetryMin and DefaultRetryMax when 0.
	RetryMin, RetryMax time.Duration
	// Client configures each RTMP connection (setup and write timeouts,
	// dialer, TLS). When its Log is nil, the session lines of rtmp.Push
	// go to the push's logger (env.Log with stream and target).
	Client rtmp.ClientOptions
	// PassQuery passes the query string of the stream's publisher on to
	// every target, after the target URL's own parameters: an edge
	// forwarding a publisher to its origin passes the publisher's token
	// through. When false, only the target URL's own query is sent.
	PassQuery bool
	// Proto is the protocol the forward's readers report; DefaultProto
	// when "".
	Proto string
}

func (o *Options) defaults() {
	if o.RetryMin <= 0 {
		o.RetryMin = DefaultRetryMin
	}
	if o.RetryMax <= 0 {
		o.RetryMax = DefaultRetryMax
	}
	o.RetryMax = max(o.RetryMax, o.RetryMin)
	if o.Proto == "" {
		o.Proto = DefaultProto
	}
}

// Target is one destination of a stream: one push, kept up by its own
// reconnect loop.
type Target struct {
	// URLs are where the push may go, in order of preference, each a
	// full push URL (rtmp://host:port/app/name) with its own query
	// string, if any. The push starts with the first; after an attempt
	// fails or a session drops, the next attempt goes to the next URL,
	// and back to the first after the last. A plain forward has one; an
	// edge may list its upstreams, primary first, to fail over.
	URLs []*url.URL
}

// Streams forwards the streams of env.Hub for which match returns true
// until ctx ends, then returns nil once every push it started has ended.
// It returns early only with an error from the hub's Watch (nil when the
// hub closes at shutdown).
//
// Each stream is delivered once, when it becomes ready (pipeline.Hub.Watch;
// a publisher reconnecting within its grace is the same stream), and
// targets is called for it once, on Streams' goroutine: each Target it
// returns gets a push of its own, retried with backoff (Options) until the
// stream ends or ctx ends. A push holds a reader of the stream only while
// its target has accepted the publish (see the package documentation), so
// a forward whose target is down is never a reader the stream waits for
// or drops. match is called with the hub's lock held: it must be quick and
// must not call the hub.
//
// Every push logs "forward connected" and "forward dropped" on env.Log
// and counts sluice_forward_sessions_total{target} and
// sluice_forward_closed_total{target,cause} on env.Metrics, target being
// the host:port the attempt used.
func Streams(ctx context.Context, env pipeline.Env, match func(*pipeline.Stream) bool, targets func(*pipeline.Stream) []Target, o Options) error {
	o.defaults()
	f := &forwarder{env: env, o: o, m: newMetrics(env.Metrics)}
	w := env.Hub.Watch(match)
	var wg sync.WaitGroup
	defer func() {
		w.Close()
		wg.Wait()
	}()
	for {
		s, err := w.Next(ctx)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, pipeline.ErrHubClosed) {
				return nil
			}
			return err
		}
		for _, t := range targets(s) {
			if len(t.URLs) == 0 {
				continue
			}
			wg.Go(func() { f.push(ctx, s, t) })
		}
	}
}

// forwarder is what the pushes of one Streams call share.
type forwarder struct {
	env pipeline.Env
	o   Options
	m   metrics
}

type metrics struct {
	sessions *pipeline.CounterVec
	closed   *pipeline.CounterVec
}

func newMetrics(m *pipeline.Metrics) metrics {
	return metrics{
		sessions: m.Counter("sluice_forward_sessions_total", "Forward sessions a target accepted, by target (host:port).", "target"),
		closed:   m.Counter("sluice_forward_closed_total", "Forward attempts ended, by target (host:port) and cause.", "target", "cause"),
	}
}

// Causes a forward attempt ends with, the cause label of
// sluice_forward_closed_total.
const (
	CauseStreamEnded    = "stream_ended"    // the stream ended: the push is over
	CauseShutdown       = "shutdown"        // the caller's context ended
	CauseConnectError   = "connect_error"   // the target could not be reached
	CauseRefused        = "refused"         // the target refused the connect or the publish
	CauseTimeout        = "timeout"         // the target did not answer, or accepted nothing, in time
	CauseConnectionLost = "connection_lost" // the target closed the session
	CauseTooSlow        = "too_slow"        // the target took the stream too slowly and the reader was dropped
	CauseError          = "error"           // anything else
)

// push keeps the stream s pushed to t until s ends or ctx ends.
func (f *forwarder) push(ctx context.Context, s *pipeline.Stream, t Target) {
	backoff := pipeline.Backoff{Min: f.o.RetryMin, Max: f.o.RetryMax, Good: goodSession}
	var query string // the publisher's, remembered through its grace
	for i := 0; ; i = (i + 1) % len(t.URLs) {
		select {
		case <-s.Done():
			return
		default:
		}
		if f.o.PassQuery {
			if pub := s.Info().Publisher; pub != nil {
				query = pub.Query
			}
		}
		u := withQuery(t.URLs[i], query)
		label := hostPort(u)
		log := f.env.Log.With("stream", s.Path(), "target", pipeline.LogURL(u))
		client := f.o.Client
		if client.Log == nil {
			client.Log = log.With("proto", f.o.Proto)
		}

		var connected time.Time
		err := rtmp.Push(ctx, u, client, func() (*pipeline.Reader, error) {
			select {
			case <-s.Done():
				// Ended while the target was answering: the push
				// would send nothing but the end.
				return nil, pipeline.ErrStreamEnded
			default:
			}
			connected = time.Now()
			f.m.sessions.With(label).Inc()
			log.Info("forward connected")
			return s.Subscribe(pipeline.ClientInfo{Proto: f.o.Proto, Remote: u.Host}), nil
		})
		cause := causeOf(ctx, s, err, !connected.IsZero())
		f.m.closed.With(label, cause).Inc()
		switch cause {
		case CauseShutdown:
			return
		case CauseStreamEnded:
			if !connected.IsZero() {
				log.Info("forward ended", "cause", cause, "duration", time.Since(connected).Round(time.Millisecond))
			}
			return
		}
		var lasted time.Duration
		if !connected.IsZero() {
			lasted = time.Since(connected)
		}
		wait := backoff.Next(lasted)
		log.Warn("forward dropped", "cause", cause, "err", err, "retry_in", wait.Round(time.Millisecond))
		if !pipeline.Sleep(ctx, wait, s.Done()) {
			return
		}
	}
}

// causeOf names why an attempt ended. connected reports whether the
// target had accepted the publish.
func causeOf(ctx context.Context, s *pipeline.Stream, err error, connected bool) string {
	switch {
	case ctx.Err() != nil:
		return CauseShutdown
	case err == nil, errors.Is(err, pipeline.ErrStreamEnded):
		return CauseStreamEnded
	case errors.Is(err, pipeline.ErrReaderTooSlow):
		return CauseTooSlow
	case errors.Is(err, pipeline.ErrUpstreamRefused):
		return CauseRefused
	case errors.Is(err, pipeline.ErrUpstreamIdle):
		return CauseTimeout
	case errors.Is(err, pipeline.ErrUpstreamDown) && connected:
		select {
		case <-s.Done():
			// The stream ended as the connection went: the end wins.
			return CauseStreamEnded
		default:
		}
		return CauseConnectionLost
	case errors.Is(err, pipeline.ErrUpstreamDown):
		return CauseConnectError
	}
	return CauseError
}

// withQuery returns u with query appended to its own query string, or u
// itself when query is empty. The parts are joined as they are, without
// decoding and encoding again, so that a token reaches the target byte
// for byte.
func withQuery(u *url.URL, query string) *url.URL {
	if query == "" {
		return u
	}
	c := *u
	if c.RawQuery != "" {
		c.RawQuery += "&" + query
	} else {
		c.RawQuery = query
	}
	return &c
}

// hostPort returns the host:port u connects to, with the scheme's default
// port (RTMP 1935, RTMPS 443, as the client dials) when u names none: the
// target label of the metrics, bounded by the configured targets.
func hostPort(u *url.URL) string {
	if u.Port() != "" {
		return u.Host
	}
	port := "1935"
	if u.Scheme == "rtmps" {
		port = "443"
	}
	return net.JoinHostPort(u.Hostname(), port)
}
