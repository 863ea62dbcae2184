package pipeline

import (
	"context"
	"errors"
	"net/url"
	"time"
)

// Protocol clients. Each protocol package has, beside its server, a client
// that pulls a stream from another server (rtmp.Pull, flvhttp.Pull) and,
// where the protocol allows, one that pushes a stream to it (rtmp.Push).
// They share the types below, so that a stage (a pull ingest, an edge, a
// forward) can choose a client by URL scheme and handle every protocol's
// outcome the same way.

// Sink is where a pull client writes the stream it receives: a
// *Publisher, or a wrapper around one. Its methods are called from the
// client's goroutine only. A Sink that also has a CountBytes(n int64)
// method, as *Publisher has, is told of the bytes the client receives, as
// they arrive.
type Sink interface {
	// Write publishes one access unit, in the upstream's time base; an
	// error ends the pull with that error.
	Write(au *AccessUnit) error
	// SetMetadata records the upstream's stream description.
	SetMetadata(m *Metadata)
	// Expect declares the tracks the upstream announced.
	Expect(video, audio bool)
}

// PullFunc pulls the stream at u until the upstream ends it, ctx ends, or
// the connection fails. It calls open once, when the upstream has accepted
// the request and the stream is about to flow, and writes into the Sink it
// returns; an error from open ends the pull with that error. It returns the
// errors described at ErrUpstreamDown. rtmp.Pull and flvhttp.Pull, with
// their options bound, are PullFuncs.
type PullFunc func(ctx context.Context, u *url.URL, open func() (Sink, error)) error

// Errors of the protocol clients, checked with errors.Is. A pull returns:
//
//   - nil when the upstream ended the stream cleanly (RTMP StreamEOF or
//     UnpublishNotify, an HTTP body that ends between two tags);
//   - ctx.Err() when ctx ended;
//   - an error wrapping ErrStreamNotFound when the upstream says the stream
//     does not exist (RTMP StreamNotFound or another refused play, HTTP 404);
//   - one wrapping ErrUpstreamRefused when it turns the client away for
//     another reason (an RTMP connect error, HTTP 401, 403 and other 4xx);
//   - one wrapping ErrUpstreamDown when it cannot be reached, the handshake
//     fails, it answers 5xx, or the connection is lost mid-stream;
//   - one wrapping ErrUpstreamIdle when nothing arrives for the idle
//     timeout, while connecting or once the stream flows;
//   - the error of open or of Sink.Write as it is (a *Refusal, ErrStreamEnded
//     from a local stream that was stopped), and a parse error for a
//     malformed stream.
var (
	// ErrUpstreamDown means the upstream could not be reached or the
	// connection to it failed.
	ErrUpstreamDown = errors.New("upstream unreachable or connection lost")
	// ErrUpstreamRefused means the upstream turned the request away for a
	// reason other than a missing stream (credentials, a denied play).
	ErrUpstreamRefused = errors.New("upstream refused the request")
	// ErrUpstreamIdle means nothing came from the upstream for a pull's
	// idle timeout, or the upstream accepted nothing for a push's write
	// timeout.
	ErrUpstreamIdle = errors.New("upstream idle past the timeout")
)

// LogURL returns u without credentials, query string or fragment, which is
// where tokens travel: logs and errors are read by more people than the
// configuration.
func LogURL(u *url.URL) string {
	return (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}).String()
}

// DefaultIdleTimeout is the idle timeout of the protocol clients when
// their options set none.
const DefaultIdleTimeout = 10 * time.Second

// PullCause names why a pull ended, for logs and metric labels, from the
// error a PullFunc returned (see ErrUpstreamDown); delivered reports
// whether the stream had flowed. The set is bounded:
//
//	upstream_ended   the upstream ended the stream cleanly
//	publish_refused  the local Gate refused the publish (busy, denied)
//	canceled         the pull's context ended
//	stream_stopped   the local stream was ended under the pull
//	not_found        the upstream has no such stream
//	refused          the upstream turned the client away
//	timeout          the upstream was silent past the idle timeout
//	connection_lost  the connection failed after the stream flowed
//	connect_error    the upstream could not be reached
//	protocol_error   the stream did not parse
func PullCause(err error, delivered bool) string {
	var ref *Refusal
	switch {
	case err == nil:
		return "upstream_ended"
	case errors.As(err, &ref):
		return "publish_refused"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return "canceled"
	case errors.Is(err, ErrStreamEnded):
		return "stream_stopped"
	case errors.Is(err, ErrStreamNotFound):
		return "not_found"
	case errors.Is(err, ErrUpstreamRefused):
		return "refused"
	case errors.Is(err, ErrUpstreamIdle):
		return "timeout"
	case errors.Is(err, ErrUpstreamDown) && delivered:
		return "connection_lost"
	case errors.Is(err, ErrUpstreamDown):
		return "connect_error"
	}
	return "protocol_error"
}
