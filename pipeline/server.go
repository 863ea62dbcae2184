package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"
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
type httpStage struct {
	addr    string
	h       *Router
	log     *slog.Logger
	ln      net.Listener
	timeout time.Duration // server.shutdown_timeout

	accepted *Counter // sluice_http_connections_total
	open     *Gauge   // sluice_http_connections
}

// newHTTPStage returns the shared HTTP listener stage and registers its
// metrics in m.
func newHTTPStage(addr string, h *Router, m *Metrics, log *slog.Logger, timeout time.Duration) *httpStage {
	return &httpStage{
		addr: addr, h: h, log: log, timeout: timeout,
		accepted: m.Counter("sluice_http_connections_total",
			"TCP connections accepted by the shared HTTP listener (server.http), HTTP/1.1 and HTTP/2 alike. An edge that pulls over HTTP/2 makes one per origin, whatever the number of streams.").With(),
		open: m.Gauge("sluice_http_connections",
			"Connections the shared HTTP listener is serving now. An HTTP/1.1 player's connection leaves it when its output takes the connection over (hijack); it is then counted among the play sessions (sluice_sessions).").With(),
	}
}

func (s *httpStage) Bind() error {
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		return err
	}
	s.ln = ln
	return nil
}

// Addr returns the bound address, for tests that listen on port 0.
func (s *httpStage) Addr() net.Addr { return s.ln.Addr() }

func (s *httpStage) Run(ctx context.Context) error {
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	srv := newServer(s.h, s.log)
	srv.Protocols = &protos
	srv.HTTP2 = &http.HTTP2Config{
		MaxConcurrentStreams: http2MaxStreams,
		SendPingTimeout:      http2PingAfter,
		PingTimeout:          http2PingTimeout,
		WriteByteTimeout:     http2WriteStall,
	}
	srv.ConnState = s.connState
	return serve(ctx, srv, s.ln, s.log, s.timeout)
}

// connState counts connections as net/http reports their states. Every
// connection reports StateNew once, and then StateHijacked or StateClosed
// once, HTTP/2 ones included.
func (s *httpStage) connState(_ net.Conn, state http.ConnState) {
	switch state {
	case http.StateNew:
		s.accepted.Inc()
		s.open.Add(1)
	case http.StateHijacked, http.StateClosed:
		s.open.Add(-1)
	}
}

// newServer returns the http.Server settings both listeners share.
func newServer(h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
}

// serveHTTP serves h on ln until ctx ends, then shuts down within timeout.
func serveHTTP(ctx context.Context, ln net.Listener, h http.Handler, log *slog.Logger, timeout time.Duration) error {
	return serve(ctx, newServer(h, log), ln, log, timeout)
}

// serve runs srv on ln until ctx ends, then shuts it down within timeout.
// Handlers that hijacked their connection are not tracked by
// http.Server.Shutdown; each stage waits for its own (RunStage). HTTP/2
// streams are: Shutdown sends GOAWAY and waits for them, and they end when
// their stage's context does.
func serve(ctx context.Context, srv *http.Server, ln net.Listener, log *slog.Logger, timeout time.Duration) error {
	log.Info("listening", "addr", ln.Addr().String())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
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
	addr    string
	hub     *Hub
	metrics *Metrics
	log     *slog.Logger
	ln      net.Listener
	timeout time.Duration
	// detailers returns the stages whose StreamDetailer answers join
	// /api/v1/streams; nil for none.
	detailers func() []StreamDetailer
}

func (s *apiStage) Bind() error {
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		return err
	}
	s.ln = ln
	return nil
}

// Addr returns the bound address.
func (s *apiStage) Addr() net.Addr { return s.ln.Addr() }

func (s *apiStage) Run(ctx context.Context) error {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", s.metrics.Handler())
	mux.HandleFunc("GET /api/v1/streams", func(w http.ResponseWriter, r *http.Request) {
		var ds []StreamDetailer
		if s.detailers != nil {
			ds = s.detailers()
		}
		streams, err := streamsWithDetails(s.hub.Streams(), ds)
		if err != nil {
			s.log.Warn("streams API: cannot encode stream details", "err", err)
			http.Error(w, "cannot encode stream details", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"streams": streams})
	})
	mux.HandleFunc("GET /api/v1/health", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok"}` + "\n"))
	})
	return serveHTTP(ctx, s.ln, mux, s.log, s.timeout)
}
