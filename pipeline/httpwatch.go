package pipeline

import (
	"bytes"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"

	"github.com/sluice-media/sluice/pipeline/config"
)

// The HTTP listeners' limits on a request's header (its size, the time to
// send it) are enforced by net/http, which neither says when it enforces
// them nor lets a handler see the request: it answers 431 itself, or
// closes the connection when the header timeout passes. The listener's
// connections are watched instead, below net/http (and below TLS), so
// that every such hit is counted and logged like any other limit, and a
// request that is not HTTP at all is counted too.

// Answers net/http writes by itself, in one Write on the connection,
// before any handler runs (net/http/server.go, conn.serve): their
// header order (Content-Type before Connection) is not one a handler's
// answer has, since net/http sorts those.
var (
	earlyHeaderTooLarge = []byte("HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n")
	earlyBadRequest     = []byte("HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n")
)

// watcher is what the watches of one HTTP listener share.
type watcher struct {
	gate      *Gate
	log       *slog.Logger
	limits    config.Limits
	malformed *Counter // sluice_http_malformed_requests_total{listener}; nil under TLS
}

// newWatcher returns the watcher of listener ("http", "https", "api");
// under TLS, the bytes it sees are encrypted, so malformed requests are
// not counted.
func newWatcher(rt *Runtime, listener string, tls bool, log *slog.Logger, l config.Limits) *watcher {
	w := &watcher{gate: rt.Gate, log: log, limits: limitDefaults(l)}
	if !tls {
		w.malformed = rt.Metrics.Counter("sluice_http_malformed_requests_total",
			"Requests an HTTP listener answered 400 before any route saw them, because they do not parse as HTTP (bytes of another protocol, a broken request line or header), by listener (http, api). Not counted under TLS.",
			"listener").With(listener)
	}
	return w
}

// watchListener gives every connection of an HTTP listener a watch.
type watchListener struct {
	net.Listener
	s *watcher
}

func (l watchListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if lc, ok := c.(*limitedConn); ok {
		// Before net/http has the connection: no read or write yet.
		lc.watch = &httpWatch{s: l.s, remote: c.RemoteAddr().String()}
	}
	return c, nil
}

// httpWatch follows one HTTP connection: its state as net/http reports
// it (ConnState), the bytes read since it last began waiting for a
// request, and the answers net/http writes on its own.
type httpWatch struct {
	s      *watcher
	remote string
	state  atomic.Int32 // an http.ConnState
	read   atomic.Int64 // bytes read since StateNew or StateIdle
	hit    atomic.Bool  // a header limit was reported for it
}

// watchOf returns the watch of a connection net/http reports a state of,
// nil if it has none.
func watchOf(c net.Conn) *httpWatch {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	if lc, ok := c.(*limitedConn); ok {
		return lc.watch
	}
	return nil
}

// watchState tells the watch of c, if it has one, the state net/http
// reports (http.Server.ConnState).
func watchState(c net.Conn, st http.ConnState) {
	if w := watchOf(c); w != nil {
		w.setState(st)
	}
}

func (w *httpWatch) setState(st http.ConnState) {
	if st == http.StateNew || st == http.StateIdle {
		w.read.Store(0)
	}
	w.state.Store(int32(st))
}

// onRead sees every read of the connection. A read that times out while
// net/http waits for a request header is the header timeout: on a new
// connection (whether the client sent part of a header or nothing at
// all, or did not finish a TLS handshake), or on a kept-alive one that
// began a request. A kept-alive connection that sent nothing is merely
// idle, and its timeout is no limit hit.
func (w *httpWatch) onRead(n int, err error) {
	if n > 0 {
		w.read.Add(int64(n))
	}
	var ne net.Error
	if err == nil || !errors.As(err, &ne) || !ne.Timeout() {
		return
	}
	st := http.ConnState(w.state.Load())
	read := w.read.Load()
	if st == http.StateNew || st == http.StateIdle && read > 0 {
		w.limit(LimitHTTPHeaderTimeout, "HTTP connection closed: no whole request header within http_header_timeout",
			"bytes", read, "timeout", w.s.limits.HTTPHeaderTimeout)
	}
}

// onWrite sees the writes that go through the connection's Write (a
// writev of a player's batch does not), to catch net/http's own answers.
func (w *httpWatch) onWrite(p []byte) {
	if len(p) == 0 || p[0] != 'H' {
		return
	}
	switch {
	case bytes.HasPrefix(p, earlyHeaderTooLarge):
		w.limit(LimitHTTPHeaderBytes, "HTTP request refused: its header is larger than http_max_header_bytes",
			"max", w.s.limits.HTTPMaxHeaderBytes)
	case bytes.HasPrefix(p, earlyBadRequest) && w.s.malformed != nil:
		w.s.malformed.Inc()
		if w.s.gate.hits.shouldLog("malformed_http", hostOf(w.remote)) {
			w.s.log.Warn("HTTP request refused: it does not parse as HTTP/1.1 (answered 400)", "remote", w.remote)
		}
	}
}

// limit reports a header limit hit, once per connection: net/http closes
// it right after.
func (w *httpWatch) limit(limit, msg string, args ...any) {
	if w.hit.Swap(true) {
		return
	}
	w.s.gate.LimitHit(w.s.log, limit, w.remote, msg, args...)
}

// Read and Write are the net.Conn's, seen by the watch of an HTTP
// listener's connection.
func (c *limitedConn) Read(p []byte) (int, error) {
	if c.pace != nil {
		return c.pace.read(c, p)
	}
	n, err := c.TCPConn.Read(p)
	if w := c.watch; w != nil {
		w.onRead(n, err)
	}
	return n, err
}

func (c *limitedConn) Write(p []byte) (int, error) {
	if w := c.watch; w != nil {
		w.onWrite(p)
	}
	return c.TCPConn.Write(p)
}

var _ net.Listener = watchListener{}
