package pipeline

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-media/sluice/pipeline/config"
)

// Limits: the bounds of the server block's limits block (config.Limits)
// belong to the Gate, which every build updates, so that a reload applies
// them to the next connection or session without restarting a listener.
// Every hit is counted in sluice_limit_hits_total{limit}; what is refused
// at admission is counted among the refusals too (reason "limit"). A hit
// is logged once: where it ends a connection or a session, by the line
// the protocol writes for that end; where nothing else would log (a
// connection closed as soon as accepted), by the Gate, once per client
// address and limit a minute.

// The limits, as sluice_limit_hits_total's limit label names them: the
// attribute of the limits block that was hit, without its max_ prefix, or
// for the timeouts the attribute itself.
const (
	LimitConnections       = "connections"
	LimitConnectionsPerIP  = "connections_per_ip"
	LimitStreams           = "streams"
	LimitPublishersPerIP   = "publishers_per_ip"
	LimitPulls             = "pulls"
	LimitRTMPChunkSize     = "rtmp_chunk_size"
	LimitRTMPMessageSize   = "rtmp_message_size"
	LimitAMFDepth          = "amf_depth"
	LimitAMFString         = "amf_string"
	LimitHTTPHeaderBytes   = "http_header_bytes"
	LimitHTTPHeaderTimeout = "http_header_timeout"
	LimitPushRate          = "push_rate"
)

// Errors of the limits at admission, which the Gate refuses with reason
// "limit".
var (
	// ErrTooManyStreams means the stream table is full (max_streams).
	ErrTooManyStreams = errors.New("too many streams")
	// ErrTooManyPublishers means the client's address publishes
	// max_publishers_per_ip streams already.
	ErrTooManyPublishers = errors.New("too many publishers from this address")
	// ErrTooManyPulls means max_pulls on-demand pulls run already.
	ErrTooManyPulls = errors.New("too many on-demand pulls")
)

// LimitError is the error a protocol reports when a client went past one
// of the limits (a chunk size, a message, an AMF value): errors.As finds
// it, so that the session ends with cause "limit".
type LimitError struct {
	// Limit is one of the Limit* names.
	Limit string
	// Detail says what the client did, and the bound by its attribute
	// name.
	Detail string
}

func (e *LimitError) Error() string { return e.Detail }

// limitHits counts the hits of every limit and remembers which client
// addresses were logged lately, so that one client hitting a limit a
// thousand times makes one line a minute, not a thousand.
type limitHits struct {
	vec    *CounterVec
	mu     sync.Mutex
	logged map[string]time.Time
}

// limitLogEvery is how often one client address is logged for one limit.
const limitLogEvery = time.Minute

func newLimitHits(m *Metrics) *limitHits {
	return &limitHits{
		vec: m.Counter("sluice_limit_hits_total", "Times a client went past one of the server's limits (the limits block; README, Limits), by limit.", "limit"),
	}
}

// shouldLog reports whether a hit of limit by addr is the first in
// limitLogEvery. The table is bounded: past 4096 entries it starts over,
// at worst logging a client twice.
func (l *limitHits) shouldLog(limit, addr string) bool {
	key := limit + " " + addr
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if t, ok := l.logged[key]; ok && now.Sub(t) < limitLogEvery {
		return false
	}
	if l.logged == nil || len(l.logged) >= 4096 {
		l.logged = map[string]time.Time{}
	}
	l.logged[key] = now
	return true
}

// Limits returns the limits in force: the last build's limits block. Size
// and time bounds are never zero (a Gate without a build has the
// defaults); a count or rate of zero is no bound.
func (g *Gate) Limits() config.Limits { return g.conf.Load().Limits }

// CountLimit counts a hit of limit, for a protocol that logs the end of
// the connection or session it caused itself (one line, naming the limit
// through a *LimitError or the refusal).
func (g *Gate) CountLimit(limit string) { g.hits.vec.With(limit).Inc() }

// LimitHit counts a hit of limit by the client at remote ("host:port" or
// "host") and logs msg at Warn on log, with args, the limit and the
// client, at most once a minute per client address and limit.
func (g *Gate) LimitHit(log *slog.Logger, limit, remote, msg string, args ...any) {
	g.CountLimit(limit)
	host := hostOf(remote)
	if g.hits.shouldLog(limit, host) {
		log.Warn(msg, append(args, "limit", limit, "remote", remote)...)
	}
}

// LogOnce reports whether a warning of kind about the client at remote is
// the first in a minute for its address, for a protocol whose clients can
// fail the same way a thousand times (connections that never finish a
// handshake): it logs the first at Warn and the rest at Debug, and counts
// them all.
func (g *Gate) LogOnce(kind, remote string) bool {
	return g.hits.shouldLog(kind, hostOf(remote))
}

// limitDefaults fills the size and time bounds a zero config.Limits
// leaves unset (a Gate made without a file, as tests do), so that
// consumers never see a zero they would have to interpret; counts stay
// zero, which is no bound.
func limitDefaults(l config.Limits) config.Limits {
	d := config.DefaultLimits()
	set := func(v *int, def int) {
		if *v <= 0 {
			*v = def
		}
	}
	set(&l.RTMPMaxChunkSize, d.RTMPMaxChunkSize)
	set(&l.RTMPMaxMessageSize, d.RTMPMaxMessageSize)
	set(&l.AMFMaxDepth, d.AMFMaxDepth)
	set(&l.AMFMaxString, d.AMFMaxString)
	set(&l.HTTPMaxHeaderBytes, d.HTTPMaxHeaderBytes)
	if l.HTTPHeaderTimeout <= 0 {
		l.HTTPHeaderTimeout = d.HTTPHeaderTimeout
	}
	if l.HTTPIdleTimeout <= 0 {
		l.HTTPIdleTimeout = d.HTTPIdleTimeout
	}
	if l.PushRateWindow <= 0 {
		l.PushRateWindow = d.PushRateWindow
	}
	return l
}

// limitFields are the limits block's values by attribute name, for a
// reload's plan.
func limitFields(l config.Limits) fields {
	exempt := make([]string, len(l.Exempt))
	for i, p := range l.Exempt {
		exempt[i] = p.String()
	}
	return fields{
		"max_connections":        strconv.Itoa(l.MaxConnections),
		"max_connections_per_ip": strconv.Itoa(l.MaxConnectionsPerIP),
		"max_streams":            strconv.Itoa(l.MaxStreams),
		"max_publishers_per_ip":  strconv.Itoa(l.MaxPublishersPerIP),
		"max_pulls":              strconv.Itoa(l.MaxPulls),
		"exempt":                 strings.Join(exempt, ", "),
		"rtmp_max_chunk_size":    strconv.Itoa(l.RTMPMaxChunkSize),
		"rtmp_max_message_size":  strconv.Itoa(l.RTMPMaxMessageSize),
		"amf_max_depth":          strconv.Itoa(l.AMFMaxDepth),
		"amf_max_string":         strconv.Itoa(l.AMFMaxString),
		"http_max_header_bytes":  strconv.Itoa(l.HTTPMaxHeaderBytes),
		"http_header_timeout":    l.HTTPHeaderTimeout.String(),
		"http_idle_timeout":      l.HTTPIdleTimeout.String(),
		"push_min_rate":          strconv.FormatInt(l.PushMinRate, 10),
		"push_rate_window":       l.PushRateWindow.String(),
	}
}

// hostOf returns the host of a "host:port" address, or addr itself.
func hostOf(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

// addrOf parses the client address of a "host:port" or "host" string.
func addrOf(remote string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(hostOf(remote))
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

// gate returns the Gate that admitted the session, nil for a publisher or
// player it did not admit.
func (s *session) gate() *Gate {
	if s == nil {
		return nil
	}
	return s.g
}

// publishers counts the publishers of each client address, for
// max_publishers_per_ip. Its zero value is ready to use.
type publishers struct {
	mu   sync.Mutex
	byIP map[netip.Addr]int
}

// take reserves a publisher slot of the client at remote, or fails with
// ErrTooManyPublishers; release gives it back (once). Exempt addresses
// and a max of 0 take no slot.
func (p *publishers) take(remote string, l *config.Limits) (release func(), err error) {
	addr, ok := addrOf(remote)
	if l.MaxPublishersPerIP <= 0 || !ok || l.Exempted(addr) {
		return func() {}, nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if n := p.byIP[addr]; n >= l.MaxPublishersPerIP {
		return nil, fmt.Errorf("%w: %s publishes %d streams, max_publishers_per_ip is %d", ErrTooManyPublishers, addr, n, l.MaxPublishersPerIP)
	}
	if p.byIP == nil {
		p.byIP = map[netip.Addr]int{}
	}
	p.byIP[addr]++
	var once sync.Once
	return func() {
		once.Do(func() {
			p.mu.Lock()
			defer p.mu.Unlock()
			if p.byIP[addr]--; p.byIP[addr] <= 0 {
				delete(p.byIP, addr)
			}
		})
	}, nil
}

// connLimiter enforces max_connections and max_connections_per_ip on the
// sockets of Runtime.Listen: a connection past either is closed as soon
// as it is accepted, before any byte is read, so that it costs a file
// descriptor for a moment and nothing else. A connection counts until it
// is closed, whoever closes it (a stage, net/http, a hijacking handler).
type connLimiter struct {
	gate *Gate
	log  *slog.Logger

	total atomic.Int64
	mu    sync.Mutex
	byIP  map[netip.Addr]int
}

// admit returns c wrapped so that closing it releases its place, or nil
// after closing c when it is one too many. Unless count is set, it only
// wraps c (for the watch of an HTTP listener), counting nothing.
//
// Every counted connection is counted under its address, whether a
// per-address limit applies to it or not, so that a limit set or an
// exemption lifted by a reload sees the connections already open.
func (cl *connLimiter) admit(c net.Conn, count bool) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c // the sockets of Runtime.Listen are TCP
	}
	if !count {
		return &limitedConn{TCPConn: tc, release: func() {}}
	}
	l := cl.gate.Limits()
	remote := c.RemoteAddr().String()
	addr := tc.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
	if n := cl.total.Add(1); l.MaxConnections > 0 && n > int64(l.MaxConnections) {
		cl.total.Add(-1)
		c.Close()
		cl.gate.LimitHit(cl.log, LimitConnections, remote, "connection refused: the server has max_connections open",
			"max", l.MaxConnections, "local", c.LocalAddr().String())
		return nil
	}
	cl.mu.Lock()
	n := cl.byIP[addr]
	if l.MaxConnectionsPerIP > 0 && n >= l.MaxConnectionsPerIP && !l.Exempted(addr) {
		cl.mu.Unlock()
		cl.total.Add(-1)
		c.Close()
		cl.gate.LimitHit(cl.log, LimitConnectionsPerIP, remote, "connection refused: this address has max_connections_per_ip open",
			"max", l.MaxConnectionsPerIP, "local", c.LocalAddr().String())
		return nil
	}
	if cl.byIP == nil {
		cl.byIP = map[netip.Addr]int{}
	}
	cl.byIP[addr] = n + 1
	cl.mu.Unlock()
	lc := &limitedConn{TCPConn: tc}
	lc.release = func() {
		cl.total.Add(-1)
		cl.mu.Lock()
		if cl.byIP[addr]--; cl.byIP[addr] <= 0 {
			delete(cl.byIP, addr)
		}
		cl.mu.Unlock()
	}
	return lc
}

// limitedConn is a connection the limiter counts until it is closed. It
// embeds the *net.TCPConn itself, not a net.Conn, so that it keeps every
// method of one: SyscallConn for the direct writers, and the writev path
// of net.Buffers, which asserts an interface of package net's own.
type limitedConn struct {
	*net.TCPConn
	once    sync.Once
	release func()
	// watch follows the connection of an HTTP listener (httpwatch.go);
	// nil for others. Set before the connection is handed out.
	watch *httpWatch
	// pace paces the reads of a publisher's connection (pace.go); set by
	// the reading goroutine, nil for others.
	pace *pacer
}

func (c *limitedConn) Close() error {
	err := c.TCPConn.Close()
	c.once.Do(c.release)
	return err
}

var (
	_ error    = (*LimitError)(nil)
	_ net.Conn = (*limitedConn)(nil)
)
