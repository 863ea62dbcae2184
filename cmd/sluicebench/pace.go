package main

import (
	"context"
	"net"
	"sync/atomic"
	"syscall"
	"time"
)

// pacer makes a player read its socket as a viewer whose player wakes
// periodically does (-read-interval): every interval it reads whatever has
// arrived, until the socket is empty, and sleeps until the next wake-up.
// Data the server sends meanwhile waits in the kernel's receive buffer, so
// the server sees the socket's window close and reopen as it would with such
// a viewer, instead of every write being read at once.
//
// Pacing starts with start, once the player's setup is done: a handshake
// read in 50 ms steps would only delay the first frame by the round trips
// it needs, which no real player does.
type pacer struct {
	interval time.Duration
	phase    time.Duration // offset of the first wake-up, so players do not wake together
	on       atomic.Bool

	// The rest belongs to the one goroutine that reads the connection
	// (the player's, or net/http's read loop for HTTP-FLV).
	next     time.Time
	draining bool
	timer    *time.Timer
}

// newPacer returns a pacer that wakes every interval, the first time phase
// after pacing starts.
func newPacer(interval, phase time.Duration) *pacer {
	return &pacer{interval: interval, phase: phase}
}

// start begins pacing the connections wrap returned. It may be called from
// any goroutine.
func (p *pacer) start() { p.on.Store(true) }

// wrap returns c with its reads paced by p. A connection without a file
// descriptor (or on a system without pacedRead) is returned as it is, read
// as data arrives.
func (p *pacer) wrap(c net.Conn) net.Conn {
	if !pacingSupported {
		return c
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return c
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return c
	}
	return &pacedConn{Conn: c, p: p, raw: raw}
}

// sleep waits for the next wake-up. A player that overran one (its drain
// took longer than the interval) skips it, as a periodic timer does.
func (p *pacer) sleep() {
	now := time.Now()
	if p.next.IsZero() {
		p.next = now.Add(p.phase)
	} else {
		p.next = p.next.Add(p.interval)
		if late := now.Sub(p.next); late > 0 {
			p.next = p.next.Add((late/p.interval + 1) * p.interval)
		}
	}
	d := p.next.Sub(now)
	if d <= 0 {
		return
	}
	if p.timer == nil {
		p.timer = time.NewTimer(d)
	} else {
		p.timer.Reset(d)
	}
	<-p.timer.C
}

// pacedConn is a connection whose reads a pacer schedules.
type pacedConn struct {
	net.Conn
	p   *pacer
	raw syscall.RawConn
}

// Read returns what the socket holds now while the player is awake, and
// sleeps to the next wake-up once the socket is empty. A closed connection
// is noticed at the next wake-up at the latest.
func (c *pacedConn) Read(b []byte) (int, error) {
	p := c.p
	if !p.on.Load() {
		return c.Conn.Read(b)
	}
	for {
		if p.draining {
			n, empty, err := pacedRead(c.raw, b)
			if !empty {
				return n, err
			}
			p.draining = false
		}
		p.sleep()
		p.draining = true
	}
}

// pacerKey is the request context key under which an HTTP player hands its
// pacer to the dialer (net/http dials with the request's context values).
type pacerKey struct{}

// withPacer returns ctx carrying p for the dialer of newHTTPClient.
func withPacer(ctx context.Context, p *pacer) context.Context {
	if p == nil {
		return ctx
	}
	return context.WithValue(ctx, pacerKey{}, p)
}

var _ net.Conn = (*pacedConn)(nil)
