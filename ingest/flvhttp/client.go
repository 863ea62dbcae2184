package flvhttp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/media/flv"
	"github.com/sluice-media/sluice/pipeline/media/flvdemux"
)

// ClientOptions configure Pull. The zero value is usable.
type ClientOptions struct {
	// IdleTimeout ends the pull when the upstream sends nothing for this
	// long, the response headers included. pipeline.DefaultIdleTimeout
	// when 0.
	IdleTimeout time.Duration
	// MaxTagSize is the largest FLV tag accepted, in bytes;
	// DefaultMaxTagSize when 0.
	MaxTagSize int
	// Transport makes the request; nil uses a transport of the call's own
	// without keep-alives (one long response per connection, and a new
	// attempt must not reuse a connection to an upstream that went away).
	// Pass one NewH2CTransport to every pull of an edge to carry all the
	// streams from an origin on one connection.
	Transport http.RoundTripper
	// TLS configures https:// requests on the call's own transport
	// (Transport nil), such as a private CA's roots; nil uses TLS 1.2 or
	// newer and the system's roots. A Transport passed in brings its own.
	TLS *tls.Config
	// Log receives track changes and codec warnings; nil discards them.
	Log *slog.Logger
}

// Pull requests the HTTP-FLV stream at u (http:// or https://) and copies
// it into the Sink that open returns, until the body ends, ctx ends, or
// nothing arrives for o.IdleTimeout. open is called once the upstream has
// answered 200. It returns the errors listed at pipeline.ErrUpstreamDown:
// nil when the body ends cleanly between two tags, ErrStreamNotFound for a
// 404 or 410, ErrUpstreamDown for a failed request, a 5xx or a body cut
// short, ErrUpstreamRefused for another status, ErrUpstreamIdle, and a
// *flv.ParseError (with the byte offset) for a body that is not FLV.
func Pull(ctx context.Context, u *url.URL, o ClientOptions, open func() (pipeline.Sink, error)) error {
	where := "http-flv pull " + pipeline.LogURL(u)
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("%s: not an http:// or https:// URL", where)
	}
	idle := o.IdleTimeout
	if idle <= 0 {
		idle = pipeline.DefaultIdleTimeout
	}
	maxTag := o.MaxTagSize
	if maxTag <= 0 {
		maxTag = DefaultMaxTagSize
	}
	tr := o.Transport
	if tr == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.DisableKeepAlives = true
		t.TLSClientConfig = o.TLS
		tr = t
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}

	rctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// The idle watchdog cancels the request when nothing arrives for the
	// idle timeout: while waiting for the response, then between reads.
	watchdog := time.AfterFunc(idle, func() { cancel(pipeline.ErrUpstreamIdle) })
	defer watchdog.Stop()
	// fail classifies err, which a cancelled request reports as a bare
	// context error.
	fail := func(err error, sentinel error) error {
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(context.Cause(rctx), pipeline.ErrUpstreamIdle):
			return fmt.Errorf("%s: %w", where, pipeline.ErrUpstreamIdle)
		case sentinel != nil:
			return fmt.Errorf("%s: %w: %w", where, sentinel, err)
		}
		return fmt.Errorf("%s: %w", where, err)
	}

	req, err := http.NewRequestWithContext(rctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	req.Header.Set("User-Agent", "Sluice")
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		// The client's error quotes the whole URL; its query may carry
		// a token, which must not reach the logs.
		var ue *url.Error
		if errors.As(err, &ue) {
			ue.URL = pipeline.LogURL(u)
		}
		return fail(err, pipeline.ErrUpstreamDown)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %w", where, statusError(resp))
	}

	sink, err := open()
	if err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	counter, _ := sink.(interface{ CountBytes(n int64) })
	body := &idleReader{r: resp.Body, t: watchdog, idle: idle, count: counter}
	rd := flv.NewReader(body, maxTag)
	d := flvdemux.Demuxer{Sink: sink, Log: log}
	err = copyFLV(rd, sink, &d)
	var pe *flv.ParseError
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.Is(err, pipeline.ErrStreamEnded):
		return fmt.Errorf("%s: %w", where, err) // the local stream was stopped
	case lost(err):
		return fail(err, pipeline.ErrUpstreamDown)
	case errors.As(err, &pe):
		return fail(err, nil)
	}
	return fail(err, pipeline.ErrUpstreamDown)
}

// lost reports whether err means the connection ended inside a tag.
func lost(err error) bool {
	var be *bodyError
	return errors.As(err, &be) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// bodyError is a failure to read the response body: the connection or,
// over HTTP/2, the stream was lost (a reset stream, a connection that
// died under every stream it carried). The FLV reader wraps it in a
// *flv.ParseError with the offset; it is still a lost upstream, not a
// malformed stream.
type bodyError struct{ err error }

func (e *bodyError) Error() string { return e.err.Error() }
func (e *bodyError) Unwrap() error { return e.err }

// statusError is the error for a response other than 200, with the start
// of its body, where servers (Sluice among them) say why.
func statusError(resp *http.Response) error {
	var sentinel error
	switch {
	case resp.StatusCode == http.StatusNotFound, resp.StatusCode == http.StatusGone:
		sentinel = pipeline.ErrStreamNotFound
	case resp.StatusCode >= 500:
		sentinel = pipeline.ErrUpstreamDown
	default:
		sentinel = pipeline.ErrUpstreamRefused
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
	if why := strings.TrimSpace(string(b)); why != "" && !strings.ContainsFunc(why, func(r rune) bool { return r < ' ' }) {
		return fmt.Errorf("upstream answered %s (%s): %w", resp.Status, why, sentinel)
	}
	return fmt.Errorf("upstream answered %s: %w", resp.Status, sentinel)
}

// idleReader pushes the idle watchdog back on every read that returns
// data, and counts the bytes into the sink.
type idleReader struct {
	r     io.Reader
	t     *time.Timer
	idle  time.Duration
	count interface{ CountBytes(n int64) }
}

func (b *idleReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if n > 0 {
		b.t.Reset(b.idle)
		if b.count != nil {
			b.count.CountBytes(int64(n))
		}
	}
	if err != nil && err != io.EOF {
		err = &bodyError{err}
	}
	return n, err
}
