package pipeline

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/sluice-media/sluice/pipeline/config"
	"github.com/sluice-media/sluice/pipeline/status"
)

// Limits of the shared HTTP listener's HTTP/2 connections. An edge carries
// every stream it pulls from an origin on one connection, so a connection
// must take many streams; a peer that vanishes (a partition, no RST) must
// still be found and dropped with all of its streams.
const (
	// http2MaxStreams is how many streams one connection may have open. An
	// edge with more pulls than that opens a second connection (net/http's
	// transport does so by itself).
	http2MaxStreams = 1000
	// http2PingAfter is how long a connection may stay silent before the
	// server pings it (RFC 9113 §6.7), and http2PingTimeout how long the
	// answer may take before the connection is closed.
	http2PingAfter   = 15 * time.Second
	http2PingTimeout = 10 * time.Second
	// http2WriteStall closes a connection that accepts no byte for this
	// long. Each stream has its own write timeout (the output's
	// write_timeout) that resets the stream; this one frees the
	// connection, which would otherwise wait for the kernel's
	// retransmission limit (minutes).
	http2WriteStall = 30 * time.Second
)

// httpStage is the shared HTTP listener (server.http). Outputs and ingests
// register their routes on its Router at Build time. It speaks HTTP/1.1 and
// cleartext HTTP/2 with prior knowledge (h2c, RFC 9113 §3.3) on the same
// port: net/http tells them apart by the client's connection preface.
//
// With tls set it is the listener's HTTPS twin (server.https): the same
// router, timeouts and HTTP/2 limits behind TLS, HTTP/1.1 or HTTP/2 as the
// client's ALPN chooses (RFC 9113 §3.2).
type httpStage struct {
	retirement
	addr    string
	tls     *tls.Config // nil for cleartext
	h       *Router
	rt      *Runtime
	log     *slog.Logger
	ln      net.Listener
	timeout time.Duration // server.shutdown_timeout
	limits  config.Limits // those of the build that made the stage

	accepted *Counter // sluice_http_connections_total
	open     *Gauge   // sluice_http_connections
	watch    *watcher // the connections' watch (httpwatch.go)
}

// newHTTPStage returns the shared HTTP listener stage and registers its
// metrics in m.
func newHTTPStage(addr string, rt *Runtime, log *slog.Logger, timeout time.Duration, limits config.Limits) *httpStage {
	m := rt.Metrics
	return &httpStage{
		addr: addr, h: rt.HTTP, rt: rt, log: log, timeout: timeout, limits: limits,
		watch: newWatcher(rt, "http", false, log, limits),
		accepted: m.Counter("sluice_http_connections_total",
			"TCP connections accepted by the shared HTTP listener (server.http), HTTP/1.1 and HTTP/2 alike. An edge that pulls over HTTP/2 makes one per origin, whatever the number of streams.").With(),
		open: m.Gauge("sluice_http_connections",
			"Connections the shared HTTP listener is serving now. An HTTP/1.1 player's connection leaves it when its output takes the connection over (hijack); it is then counted among the play sessions (sluice_sessions).").With(),
	}
}

// newHTTPSStage returns the HTTPS twin of the shared HTTP listener
// (server.https), serving the same router over TLS with cfg, whose ALPN
// offers "h2" and "http/1.1"; its connections are counted apart.
func newHTTPSStage(addr string, cfg *tls.Config, rt *Runtime, log *slog.Logger, timeout time.Duration, limits config.Limits) *httpStage {
	m := rt.Metrics
	return &httpStage{
		addr: addr, tls: cfg, h: rt.HTTP, rt: rt, log: log, timeout: timeout, limits: limits,
		watch: newWatcher(rt, "https", true, log, limits),
		accepted: m.Counter("sluice_https_connections_total",
			"TCP connections accepted by the HTTPS listener (server.https), HTTP/1.1 and HTTP/2 alike, those whose TLS handshake then failed included.").With(),
		open: m.Gauge("sluice_https_connections",
			"Connections the HTTPS listener is serving now. An HTTP/1.1 player's connection leaves it when its output takes the connection over (hijack); it is then counted among the play sessions (sluice_sessions).").With(),
	}
}

func (s *httpStage) Bind() error {
	ln, err := s.rt.Listen("tcp", s.addr)
	if err != nil {
		return err
	}
	// Under TLS, so that the watch sees the connection's own reads and
	// their timeouts (the header timeout bounds the TLS handshake too).
	ln = watchListener{Listener: ln, s: s.watch}
	if s.tls != nil {
		// net/http runs the handshake on the connection's goroutine,
		// bounded by ReadHeaderTimeout.
		ln = tls.NewListener(ln, s.tls)
	}
	s.ln = ln
	return nil
}

// Addr returns the bound address, for tests that listen on port 0.
func (s *httpStage) Addr() net.Addr { return s.ln.Addr() }

func (s *httpStage) Run(ctx context.Context) error {
	var protos http.Protocols
	protos.SetHTTP1(true)
	if s.tls != nil {
		protos.SetHTTP2(true)
	} else {
		protos.SetUnencryptedHTTP2(true)
	}
	srv := newServer(s.h, s.log, s.limits)
	srv.Protocols = &protos
	srv.HTTP2 = &http.HTTP2Config{
		MaxConcurrentStreams: http2MaxStreams,
		SendPingTimeout:      http2PingAfter,
		PingTimeout:          http2PingTimeout,
		WriteByteTimeout:     http2WriteStall,
	}
	srv.ConnState = s.connState
	return serve(ctx, srv, s.ln, s.log, s.timeout, s.retired())
}

// connState counts connections as net/http reports their states, and
// tells each connection's watch. Every connection reports StateNew once,
// and then StateHijacked or StateClosed once, HTTP/2 ones included.
func (s *httpStage) connState(c net.Conn, state http.ConnState) {
	watchState(c, state)
	switch state {
	case http.StateNew:
		s.accepted.Inc()
		s.open.Add(1)
	case http.StateHijacked, http.StateClosed:
		s.open.Add(-1)
	}
}

// newServer returns the http.Server settings every listener shares, with
// the bounds of the limits block. There is no server-wide read or write
// timeout: a request body (a push) and a response (a player) may last for
// hours; each is bounded by its own rules instead (a push's idle timeout
// and rate floor, a player's write timeout).
func newServer(h http.Handler, log *slog.Logger, l config.Limits) *http.Server {
	l = limitDefaults(l)
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: l.HTTPHeaderTimeout,
		IdleTimeout:       l.HTTPIdleTimeout,
		// net/http allows 4 KiB past it before answering 431.
		MaxHeaderBytes: l.HTTPMaxHeaderBytes,
		ErrorLog:       slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
}

// serveHTTP serves h on ln until ctx ends, then shuts down within timeout.
func serveHTTP(ctx context.Context, ln net.Listener, h http.Handler, log *slog.Logger, timeout time.Duration) error {
	return serve(ctx, newServer(h, log, config.Limits{}), ln, log, timeout, nil)
}

// serve runs srv on ln until ctx ends, then shuts it down within timeout.
// Handlers that hijacked their connection are not tracked by
// http.Server.Shutdown; each stage waits for its own (RunStage). HTTP/2
// streams are: Shutdown sends GOAWAY and waits for them, and they end when
// their stage's context does.
//
// When retired is closed (a reload moved the listener or changed it), it
// stops accepting and returns once the connections it serves have finished
// their requests (http.Server.Shutdown without a deadline), or ctx ends.
func serve(ctx context.Context, srv *http.Server, ln net.Listener, log *slog.Logger, timeout time.Duration, retired <-chan struct{}) error {
	log.Info("listening", "addr", ln.Addr().String())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-retired:
		log.Info("retired by a reload; requests in flight finish here")
		if srv.Shutdown(ctx) != nil {
			_ = srv.Close()
		}
		if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	case <-ctx.Done():
	}
	// Shutdown gets three quarters of the stop's time, so that the cut
	// below happens within server.shutdown_timeout: net/http counts a
	// connection that has not sent its first request yet as busy for 5 s,
	// and a browser or an HTTP client often holds such a spare one.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout-timeout/4)
	defer cancel()
	if srv.Shutdown(sctx) != nil {
		// The timeout passed with requests still running: cut them, as
		// the stop contract says, rather than leave their connections.
		_ = srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// apiStage serves the management API and /metrics (server.api). It listens
// on loopback by default because it can see every client.
type apiStage struct {
	retirement
	addr    string
	rt      *Runtime
	hub     *Hub
	metrics *Metrics
	log     *slog.Logger
	ln      net.Listener
	timeout time.Duration
	// tls, when set, makes the API speak HTTPS only (server.api_tls).
	tls *tls.Config
	// detailers returns the stages whose StreamDetailer answers join
	// /api/v1/streams; nil for none.
	detailers func() []StreamDetailer
	// limits are the build's: its header bounds apply to the API too.
	limits config.Limits
}

func (s *apiStage) Bind() error {
	ln, err := s.rt.listenAPI("tcp", s.addr)
	if err != nil {
		return err
	}
	ln = watchListener{Listener: ln, s: newWatcher(s.rt, "api", s.tls != nil, s.log, s.limits)}
	if s.tls != nil {
		ln = tls.NewListener(ln, s.tls)
	}
	s.ln = ln
	return nil
}

// Addr returns the bound address.
func (s *apiStage) Addr() net.Addr { return s.ln.Addr() }

func (s *apiStage) Run(ctx context.Context) error {
	mux := s.routes()
	mux.Handle("GET /", status.Handler()) // the status page: pipeline/status/doc.go says why here
	srv := newServer(mux, s.log, s.limits)
	srv.ConnState = watchState
	return serve(ctx, srv, s.ln, s.log, s.timeout, s.retired())
}

// retirement makes a listener stage a Retirer.
type retirement struct {
	once sync.Once
	ch   chan struct{}
	mu   sync.Mutex
}

// Retire stops the stage's listener; its connections finish what they do.
func (r *retirement) Retire() {
	ch := r.retired()
	r.once.Do(func() { close(ch) })
}

func (r *retirement) retired() chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ch == nil {
		r.ch = make(chan struct{})
	}
	return r.ch
}
