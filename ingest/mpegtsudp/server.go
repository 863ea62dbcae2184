// Package mpegtsudp ingests MPEG-TS: pushed over UDP (unicast or multicast,
// one port per stream, as encoders and IRDs send it) and pushed over HTTP
// (POST /APP/NAME.ts). Both feed the demuxer of ingest/mpegts, which does
// the continuity checks, program-change detection and one 90 kHz clock per
// source in front of the hub.
package mpegtsudp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-media/sluice/ingest/mpegts"
	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/config"
)

// Config is the body of an `ingest "mpegts_udp" "NAME"` block.
type Config struct {
	// Listen is the UDP address, ":5000" by default. A multicast group
	// address ("239.0.0.1:5000") joins the group.
	Listen string `hcl:"listen,optional"`
	// Stream is the stream path the datagrams publish, "live/udp" by
	// default.
	Stream string `hcl:"stream,optional"`
	// Interface names the network interface a multicast group is joined
	// on; the system's default when empty.
	Interface string `hcl:"interface,optional"`
	// Timeout unpublishes a source that sends nothing for this long; when
	// it sends again it publishes again (players stay attached within the
	// pipeline's publisher_grace).
	Timeout string `hcl:"timeout,optional"`
	// ReadBuffer is the socket receive buffer in bytes (SO_RCVBUF); the
	// kernel may cap it (net.core.rmem_max). 0 keeps the system default.
	ReadBuffer int `hcl:"read_buffer,optional"`

	timeout time.Duration
	addr    *net.UDPAddr
}

// Defaults fills the defaults before decoding.
func (c *Config) Defaults() {
	c.Listen = ":5000"
	c.Stream = "live/udp"
	c.Timeout = "5s"
	c.ReadBuffer = 4 << 20
}

// Validate checks and converts the fields.
func (c *Config) Validate() error {
	host, port, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return &config.FieldError{Attr: "listen", Err: fmt.Errorf("%q is not a host:port such as \":5000\" or \"239.0.0.1:5000\"", c.Listen)}
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return &config.FieldError{Attr: "listen", Err: fmt.Errorf("%q has no valid port", c.Listen)}
	}
	addr := &net.UDPAddr{}
	addr.Port, _ = strconv.Atoi(port)
	if host != "" {
		ip, err := netip.ParseAddr(host)
		if err != nil {
			return &config.FieldError{Attr: "listen", Err: fmt.Errorf("%q: the host must be an IP address (or empty for every interface)", c.Listen)}
		}
		addr.IP = ip.AsSlice()
	}
	c.addr = addr
	if c.Interface != "" && !addr.IP.IsMulticast() {
		return &config.FieldError{Attr: "interface", Err: fmt.Errorf("only applies to a multicast listen address, and %q is not one", c.Listen)}
	}
	if err := pipeline.ValidPath(c.Stream); err != nil {
		return &config.FieldError{Attr: "stream", Err: err}
	}
	if c.timeout, err = time.ParseDuration(c.Timeout); err != nil || c.timeout <= 0 {
		return &config.FieldError{Attr: "timeout", Err: fmt.Errorf("%q is not a positive duration such as \"5s\"", c.Timeout)}
	}
	if c.ReadBuffer < 0 {
		return &config.FieldError{Attr: "read_buffer", Err: errors.New("must be a size in bytes, or 0 for the system default")}
	}
	return nil
}

// Register adds the "mpegts_udp" and "mpegts_http" ingest kinds.
func Register(k *pipeline.Kinds) {
	pipeline.Add(k, "ingest", "mpegts_udp", func(c *Config, env pipeline.Env) (pipeline.Stage, error) {
		if _, ok := env.Resolve(c.Stream); !ok {
			return nil, fmt.Errorf("stream %q matches no pipeline; add a pipeline whose match covers it", c.Stream)
		}
		return New(c, env), nil
	})
	registerHTTP(k)
}

// Server is the stage of one mpegts_udp block: one socket, one stream.
type Server struct {
	cfg  Config
	env  pipeline.Env
	log  *slog.Logger
	conn *net.UDPConn
	dm   *mpegts.Counters
	m    udpMetrics

	warned map[string]time.Time // rate limit for per-sender warnings
}

type udpMetrics struct {
	datagrams *pipeline.Counter
	bytes     *pipeline.Counter
	publishes *pipeline.Counter
	rejected  *pipeline.CounterVec
}

// New returns the stage for cfg (already validated).
func New(cfg *Config, env pipeline.Env) *Server {
	s := &Server{cfg: *cfg, env: env, log: env.Log.With("stream", cfg.Stream, "proto", "mpegts-udp"), warned: map[string]time.Time{}}
	s.counters()
	return s
}

// counters (re)takes the stream's counters. Per-stream series are dropped
// when a stream ends (Metrics.ForgetStream), so each new source session
// takes them anew; called from the read loop only.
func (s *Server) counters() {
	m, st := s.env.Metrics, s.cfg.Stream
	s.dm = mpegts.NewCounters(m, st)
	s.m = udpMetrics{
		datagrams: m.Counter("sluice_mpegts_udp_datagrams_total", "UDP datagrams received, by stream.", "stream").With(st),
		bytes:     m.Counter("sluice_mpegts_udp_received_bytes_total", "UDP payload bytes received, by stream.", "stream").With(st),
		publishes: m.Counter("sluice_mpegts_publishes_total", "MPEG-TS publish sessions started, by stream.", "stream").With(st),
		rejected:  m.Counter("sluice_mpegts_rejected_total", "MPEG-TS sources refused, by stream and reason.", "stream", "reason"),
	}
}

// Bind opens the socket and, for a group address, joins the group.
func (s *Server) Bind() error {
	var err error
	if a := s.cfg.addr; a.IP.IsMulticast() {
		var ifi *net.Interface
		if s.cfg.Interface != "" {
			if ifi, err = net.InterfaceByName(s.cfg.Interface); err != nil {
				return fmt.Errorf("multicast interface %q: %w", s.cfg.Interface, err)
			}
		}
		s.conn, err = net.ListenMulticastUDP("udp", ifi, a)
	} else {
		s.conn, err = net.ListenUDP("udp", a)
	}
	if err != nil {
		return err
	}
	if n := s.cfg.ReadBuffer; n > 0 {
		if err := s.conn.SetReadBuffer(n); err != nil {
			s.log.Warn("cannot set the socket receive buffer", "bytes", n, "err", err)
		}
	}
	return nil
}

// Addr returns the bound address; for a multicast listener, the group with
// the bound port (the socket itself is bound to the wildcard address).
func (s *Server) Addr() net.Addr {
	a := s.conn.LocalAddr().(*net.UDPAddr)
	if g := s.cfg.addr; g.IP.IsMulticast() {
		return &net.UDPAddr{IP: g.IP, Port: a.Port}
	}
	return a
}

// Run reads datagrams until ctx ends. The first sender becomes the stream's
// source; while it keeps sending, others are refused. A source silent for
// the timeout is unpublished, and the next datagram (from it or another
// sender) starts a new one. Run returns once the source's goroutine has
// exited.
func (s *Server) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	var cur *source
	defer func() {
		if cur != nil {
			close(cur.ch)
		}
		wg.Wait()
	}()
	stop := context.AfterFunc(ctx, func() { s.conn.Close() })
	defer stop()
	s.log.Info("listening", "addr", s.Addr().String())

	// Datagrams carry up to 7 packets on Ethernet, more with jumbo frames
	// or on loopback; reading into a full-size buffer never truncates one.
	buf := make([]byte, 65536)
	poll := min(max(s.cfg.timeout/4, 10*time.Millisecond), 500*time.Millisecond)
	for {
		_ = s.conn.SetReadDeadline(time.Now().Add(poll))
		n, from, err := s.conn.ReadFromUDPAddrPort(buf)
		now := time.Now()
		if cur != nil && now.Sub(cur.last) > s.cfg.timeout {
			close(cur.ch) // the source's goroutine unpublishes and exits
			cur = nil
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			s.log.Debug("UDP read failed", "err", err)
			continue
		}
		s.m.datagrams.Inc()
		s.m.bytes.Add(uint64(n))
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		ts, ok := tsPayload(buf[:n])
		if !ok {
			s.dm.BadPacket("size")
			s.warn(from, "size", "datagram skipped: not whole 188-byte MPEG-TS packets", "bytes", n)
			continue
		}
		if cur == nil {
			s.counters()
			cur = &source{s: s, from: from, ch: make(chan []byte, 1024), dm: s.dm, m: s.m}
			wg.Add(1)
			go func(src *source) {
				defer wg.Done()
				src.run(ctx)
			}(cur)
		} else if cur.from != from {
			s.m.rejected.With(s.cfg.Stream, "other_source").Inc()
			s.warn(from, "other_source", "datagram skipped: another sender is this stream's source", "source", cur.from.String())
			continue
		}
		cur.last = now
		if cur.queued.Load()+int64(len(ts)) > maxQueued {
			// The demuxer is far behind (or auth is slow); losing these
			// is what the continuity check will report.
			s.dm.BadPacket("overflow")
			continue
		}
		select {
		case cur.ch <- bytes.Clone(ts):
			cur.queued.Add(int64(len(ts)))
		default:
			s.dm.BadPacket("overflow")
		}
	}
}

// tsPayload returns the transport packets of a datagram: a whole number of
// 188-byte packets, bare or behind an RTP header (RFC 2250, as sent by
// `-f rtp_mpegts` and many IPTV sources). ok is false for anything else.
func tsPayload(b []byte) ([]byte, bool) {
	if len(b) > 0 && len(b)%mpegts.PacketSize == 0 && b[0] == mpegts.SyncByte {
		return b, true
	}
	// RFC 3550 §5.1: version 2, then CSRCs, an optional extension and
	// optional padding.
	if len(b) < 12 || b[0]>>6 != 2 {
		return nil, false
	}
	h := 12 + 4*int(b[0]&0x0F)
	if b[0]&0x10 != 0 {
		if len(b) < h+4 {
			return nil, false
		}
		h += 4 + 4*(int(b[h+2])<<8|int(b[h+3]))
	}
	end := len(b)
	if b[0]&0x20 != 0 {
		pad := int(b[end-1])
		if pad == 0 || pad > end-h {
			return nil, false
		}
		end -= pad
	}
	if h >= end || (end-h)%mpegts.PacketSize != 0 || b[h] != mpegts.SyncByte {
		return nil, false
	}
	return b[h:end], true
}

// warn logs a per-sender problem at most once a minute per sender and kind.
func (s *Server) warn(from netip.AddrPort, kind, msg string, args ...any) {
	key := from.String() + " " + kind
	now := time.Now()
	if t, ok := s.warned[key]; ok && now.Sub(t) < time.Minute {
		return
	}
	if len(s.warned) > 1024 {
		clear(s.warned)
	}
	s.warned[key] = now
	s.log.Warn(msg, append([]any{"remote", from.String()}, args...)...)
}

// maxQueued bounds the datagram bytes waiting for a source's demuxer: about
// 8 s of a 8 Mb/s stream, whatever the datagram size.
const maxQueued = 8 << 20

// source is one sender's session: it decides auth, publishes, and demuxes
// the datagrams the read loop hands it, until the read loop closes ch.
type source struct {
	s      *Server
	dm     *mpegts.Counters // the session's counters, taken when it began
	m      udpMetrics
	from   netip.AddrPort
	ch     chan []byte
	queued atomic.Int64 // bytes in ch
	last   time.Time    // read loop only
}

func (src *source) run(ctx context.Context) {
	s := src.s
	// Whatever ends the session, the read loop may still send until it
	// notices the silence; draining keeps its sends cheap and its
	// overflow counter honest.
	defer func() {
		for b := range src.ch {
			src.queued.Add(-int64(len(b)))
		}
	}()
	log := s.log.With("remote", src.from.String())
	pub := src.publish(ctx, log)
	if pub == nil {
		return
	}
	var cause string
	defer func() { pub.Finish(cause) }()
	src.m.publishes.Inc()
	start := time.Now()
	log.Info("publish started")

	// A UDP sender cannot be disconnected: a kick ends its session, and
	// its datagrams are dropped (the deferred drain) until it goes
	// silent, as for a refused source.
	kicked := make(chan struct{})
	unkick := pub.OnKick(func() { close(kicked) })
	defer unkick()
	out := &pubSink{pub: pub}
	dm := mpegts.New(&chanPackets{ch: src.ch, kicked: kicked, queued: &src.queued, pub: pub}, out, log, src.dm)
	err := dm.Run()
	cause = "timeout"
	switch {
	case pub.KickCause() != "":
		cause = pub.KickCause()
	case ctx.Err() != nil:
		cause = "shutdown"
	case errors.Is(err, pipeline.ErrStreamEnded):
		cause = "stream_ended"
	case !errors.Is(err, io.EOF):
		cause = "error"
	}
	log.Info("publish ended", "cause", cause, "duration", time.Since(start).Round(time.Millisecond), "units", out.units)
}

// publish admits the source as the stream's publisher. While another
// publisher holds the stream it drops the datagrams and asks again every
// second; it gives up (nil) when the source goes silent or is refused for
// any other reason (denied, no pipeline), dropping its datagrams until it
// goes silent.
func (src *source) publish(ctx context.Context, log *slog.Logger) *pipeline.Publisher {
	s := src.s
	path := s.cfg.Stream
	req := pipeline.Request{Path: path, Client: pipeline.ClientInfo{Proto: "mpegts-udp", Remote: src.from.String()}}
	warned := false
	for {
		pub, err := s.env.Gate.Publish(ctx, req)
		if err == nil {
			return pub
		}
		ref := pipeline.RefusalOf(err)
		if ref.Reason != pipeline.ReasonBusy {
			src.m.rejected.With(path, ref.Reason).Inc()
			log.Warn("publish refused; dropping this source's packets until it goes silent", "reason", ref.Reason, "err", err)
			return nil
		}
		if !warned {
			warned = true
			src.m.rejected.With(path, "busy").Inc()
			log.Warn("stream is busy; dropping this source's packets until it is free")
		}
		t := time.NewTimer(time.Second)
	wait:
		for {
			select {
			case b, ok := <-src.ch:
				if !ok {
					t.Stop()
					return nil
				}
				src.queued.Add(-int64(len(b)))
			case <-t.C:
				break wait
			}
		}
	}
}

// chanPackets is the PacketSource of a UDP source: the datagrams the read
// loop queued, cut into packets. It ends when the read loop closes ch.
type chanPackets struct {
	ch     <-chan []byte
	kicked <-chan struct{} // closed when an operator ends the session
	queued *atomic.Int64
	pub    *pipeline.Publisher // counts the bytes taken
	cur    []byte
}

func (c *chanPackets) Next() ([]byte, error) {
	for len(c.cur) < mpegts.PacketSize {
		var b []byte
		var ok bool
		select {
		case b, ok = <-c.ch:
		case <-c.kicked:
			return nil, pipeline.ErrKicked
		}
		if !ok {
			return nil, io.EOF
		}
		c.queued.Add(-int64(len(b)))
		c.pub.CountBytes(int64(len(b)))
		c.cur = b
	}
	p := c.cur[:mpegts.PacketSize]
	c.cur = c.cur[mpegts.PacketSize:]
	return p, nil
}

// pubSink writes a demuxer's units to a Publisher.
type pubSink struct {
	pub   *pipeline.Publisher
	units uint64
}

func (p *pubSink) Expect(video, audio bool) { p.pub.Expect(video, audio) }

func (p *pubSink) Write(au *pipeline.AccessUnit) error {
	p.units++
	return p.pub.Write(au)
}

var (
	_ pipeline.Stage      = (*Server)(nil)
	_ pipeline.Binder     = (*Server)(nil)
	_ mpegts.PacketSource = (*chanPackets)(nil)
	_ mpegts.Sink         = (*pubSink)(nil)
)
