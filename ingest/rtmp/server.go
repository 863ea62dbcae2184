// Package rtmp is the RTMP server: publishers push streams into the hub and
// players read them back, both on one listener (rtmp://HOST:1935/APP/NAME).
package rtmp

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/config"
)

// Config is the body of an `ingest "rtmp"` block.
type Config struct {
	// Listen is the TCP address, ":1935" by default.
	Listen string `hcl:"listen,optional"`
	// Play lets clients play streams over RTMP as well as publish them.
	Play *bool `hcl:"play,optional"`
	// HandshakeTimeout bounds the RTMP handshake and the connect/publish/play
	// exchange that follows it.
	HandshakeTimeout string `hcl:"handshake_timeout,optional"`
	// IdleTimeout closes a publisher that sends nothing for this long.
	IdleTimeout string `hcl:"idle_timeout,optional"`
	// WriteTimeout closes a player whose socket accepts nothing for this long.
	WriteTimeout string `hcl:"write_timeout,optional"`
	// TLS makes the listener speak RTMPS, RTMP inside TLS
	// (rtmps://HOST:PORT/APP/NAME), with this certificate; a plain and a
	// TLS listener side by side are two blocks, the second with a name
	// (ingest "rtmp" "tls" { ... }).
	TLS *config.TLS `hcl:"tls,block"`

	handshake, idle, write time.Duration
}

// Defaults fills the defaults before decoding.
func (c *Config) Defaults() {
	c.Listen = ":1935"
	c.HandshakeTimeout = "10s"
	c.IdleTimeout = "30s"
	c.WriteTimeout = "10s"
}

// Validate checks and converts the fields.
func (c *Config) Validate() error {
	var err error
	for _, f := range []struct {
		name string
		s    string
		d    *time.Duration
	}{{"handshake_timeout", c.HandshakeTimeout, &c.handshake}, {"idle_timeout", c.IdleTimeout, &c.idle}, {"write_timeout", c.WriteTimeout, &c.write}} {
		if *f.d, err = time.ParseDuration(f.s); err != nil || *f.d <= 0 {
			return &config.FieldError{Attr: f.name, Err: fmt.Errorf("%q is not a positive duration such as \"10s\"", f.s)}
		}
	}
	return nil
}

// Register adds the "rtmp" ingest kind.
func Register(k *pipeline.Kinds) {
	pipeline.Add(k, "ingest", "rtmp", func(c *Config, env pipeline.Env) (pipeline.Stage, error) {
		return New(c, env)
	})
}

// Server is the RTMP listener stage.
type Server struct {
	cfg  Config
	env  pipeline.Env
	log  *slog.Logger
	tls  *tls.Config // nil for plain RTMP
	ln   net.Listener
	m    metrics
	next atomic.Uint64
	// open counts the connections being served; retired is set by
	// Retire.
	open    atomic.Int64
	retired atomic.Bool
}

// metrics counts connections; sessions (publish and play), their
// refusals, closes and bytes are counted by the Gate and the player writer
// under the names every protocol shares.
type metrics struct {
	conns  *pipeline.Counter
	closed *pipeline.CounterVec
	open   *pipeline.Gauge
}

// New returns a server for cfg (already validated). With a tls block it
// loads the certificate, so that a file that cannot be used fails the
// build (a *config.FieldError at tls.cert_file or tls.key_file).
func New(cfg *Config, env pipeline.Env) (*Server, error) {
	s := &Server{cfg: *cfg, env: env, log: env.Log}
	if cfg.TLS != nil {
		// RTMP has no ALPN protocol name, so none is offered.
		t, err := env.ServerTLS(cfg.TLS)
		if err != nil {
			return nil, err
		}
		s.tls = t
	}
	m := env.Metrics
	s.m = metrics{
		conns:  m.Counter("sluice_rtmp_connections_total", "RTMP connections accepted.").With(),
		closed: m.Counter("sluice_rtmp_closed_total", "RTMP connections closed before a publish or play started (handshake, connect), by cause.", "cause"),
	}
	// A gauge the stage moves itself: during a reload two builds of one
	// stage may exist at once, and each counts its own connections.
	s.m.open = m.Gauge("sluice_rtmp_connections", "RTMP connections open, by stage.", "stage").With(env.Address)
	return s, nil
}

// Bind opens the listener.
func (s *Server) Bind() error {
	listen := net.Listen
	if s.env.Listen != nil {
		listen = s.env.Listen
	}
	ln, err := listen("tcp", s.cfg.Listen)
	if err != nil {
		return err
	}
	if s.tls != nil {
		// The TLS handshake runs at the connection's first read, inside
		// the RTMP handshake, so handshake_timeout bounds both.
		ln = tls.NewListener(ln, s.tls)
	}
	s.ln = ln
	return nil
}

// Addr returns the bound address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// TLS reports whether the listener speaks RTMPS.
func (s *Server) TLS() bool { return s.tls != nil }

// Run accepts connections until ctx ends, then waits for every connection
// to finish: publishers are closed, players are told the stream ended.
// After Retire it accepts no more and returns once its connections have
// ended on their own.
func (s *Server) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := context.AfterFunc(ctx, func() { s.ln.Close() })
	defer stop()
	s.log.Info("listening", "addr", s.ln.Addr().String(), "tls", s.tls != nil)
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if s.retired.Load() {
				s.log.Info("retired by a reload; its sessions continue until they end", "connections", s.Sessions())
				return nil
			}
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			return err
		}
		s.m.conns.Inc()
		s.m.open.Add(1)
		s.open.Add(1)
		c := newConn(s, nc, s.next.Add(1))
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer s.open.Add(-1)
			defer s.m.open.Add(-1)
			c.serve(ctx)
		}()
	}
}

// Retire stops accepting (a reload has a replacement listening on the
// same socket or a new one); the connections already accepted go on.
func (s *Server) Retire() {
	s.retired.Store(true)
	s.ln.Close()
}

// Sessions returns how many connections the stage serves now.
func (s *Server) Sessions() int { return int(s.open.Load()) }

func (s *Server) playAllowed() bool { return s.cfg.Play == nil || *s.cfg.Play }

var (
	_ pipeline.Stage  = (*Server)(nil)
	_ pipeline.Binder = (*Server)(nil)
)
