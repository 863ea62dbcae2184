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

// httpStage is the shared HTTP listener (server.http). Outputs and ingests
// register their routes on its Router at Build time.
type httpStage struct {
	addr    string
	h       *Router
	log     *slog.Logger
	ln      net.Listener
	timeout time.Duration // server.shutdown_timeout
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
	return serveHTTP(ctx, s.ln, s.h, s.log, s.timeout)
}

// serveHTTP serves h on ln until ctx ends, then shuts down within timeout.
// Handlers that hijacked their connection are not tracked by
// http.Server.Shutdown; each stage waits for its own (RunStage).
func serveHTTP(ctx context.Context, ln net.Listener, h http.Handler, log *slog.Logger, timeout time.Duration) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	log.Info("listening", "addr", ln.Addr().String())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	_ = srv.Shutdown(sctx)
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
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"streams": s.hub.Streams()})
	})
	mux.HandleFunc("GET /api/v1/health", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok"}` + "\n"))
	})
	return serveHTTP(ctx, s.ln, mux, s.log, s.timeout)
}
