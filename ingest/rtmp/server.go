// Package rtmp is the RTMP server: publishers push streams into the hub and
// players read them back, both on one listener (rtmp://HOST:1935/APP/NAME).
package rtmp

import (
	"context"
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
		return New(c, env), nil
	})
}

// Server is the RTMP listener stage.
type Server struct {
	cfg  Config
	env  pipeline.Env
	log  *slog.Logger
	ln   net.Listener
	m    metrics
	next atomic.Uint64
}

// metrics counts connections; sessions (publish and play), their
// refusals, closes and bytes are counted by the Gate and the player writer
// under the names every protocol shares.
type metrics struct {
	conns  *pipeline.Counter
	closed *pipeline.CounterVec
	open   *pipeline.Gauge
}

// New returns a server for cfg (already validated).
func New(cfg *Config, env pipeline.Env) *Server {
	s := &Server{cfg: *cfg, env: env, log: env.Log}
	m := env.Metrics
	s.m = metrics{
		conns:  m.Counter("sluice_rtmp_connections_total", "RTMP connections accepted.").With(),
		closed: m.Counter("sluice_rtmp_closed_total", "RTMP connections closed before a publish or play started (handshake, connect), by cause.", "cause"),
	}
	// A gauge the stage moves itself: during a reload two builds of one
	// stage may exist at once, and each counts its own connections.
	s.m.open = m.Gauge("sluice_rtmp_connections", "RTMP connections open, by stage.", "stage").With(env.Address)
	return s
}

// Bind opens the listener.
func (s *Server) Bind() error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return err
	}
	s.ln = ln
	return nil
}

// Addr returns the bound address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Run accepts connections until ctx ends, then waits for every connection
// to finish: publishers are closed, players are told the stream ended.
func (s *Server) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := context.AfterFunc(ctx, func() { s.ln.Close() })
	defer stop()
	s.log.Info("listening", "addr", s.ln.Addr().String())
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			return err
		}
		s.m.conns.Inc()
		s.m.open.Add(1)
		c := newConn(s, nc, s.next.Add(1))
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer s.m.open.Add(-1)
			c.serve(ctx)
		}()
	}
}

func (s *Server) playAllowed() bool { return s.cfg.Play == nil || *s.cfg.Play }

var (
	_ pipeline.Stage  = (*Server)(nil)
	_ pipeline.Binder = (*Server)(nil)
)
