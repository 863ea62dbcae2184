package flvhttp

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"
)

// Settings of NewH2CTransport.
const (
	// h2cDialTimeout bounds connecting to an upstream.
	h2cDialTimeout = 5 * time.Second
	// h2cPingAfter is how long a connection may be silent before the
	// transport pings it (RFC 9113 §6.7), and h2cPingTimeout how long the
	// answer may take before the connection, and every stream on it, is
	// dropped. Media keeps a busy connection talking; the pings find a
	// dead upstream while no stream flows (players waiting for a
	// publisher, a connection kept for the next pull), so that the next
	// pull dials anew instead of waiting out its idle timeout on a dead
	// link.
	h2cPingAfter   = 5 * time.Second
	h2cPingTimeout = 5 * time.Second
	// h2cWriteStall drops a connection that accepts no byte for this long
	// (requests, window updates): the upstream stopped reading.
	h2cWriteStall = 10 * time.Second
	// h2cIdleConn closes a connection that carried no stream for this
	// long.
	h2cIdleConn = 90 * time.Second
)

// H2CTransport carries requests to each upstream as streams of one
// cleartext HTTP/2 connection (h2c with prior knowledge, RFC 9113 §3.3;
// HTTP/2 over TLS for https:// URLs). Every pull that shares it reaches an
// origin over a single TCP connection, the way Red5's MRTMP multiplexes
// every stream of an edge onto one link, instead of one connection per
// stream.
//
// A second connection to an upstream is opened only when the first is
// full (the upstream's SETTINGS_MAX_CONCURRENT_STREAMS; Sluice allows
// 1000) or dead. Requests that arrive together while there is none wait
// for one dial instead of racing their own: net/http's pooled Transport
// dials once per waiting request and closes the extra connections, so 20
// pulls starting at once would knock 20 times at the origin.
//
// The upstream must speak h2c: Sluice does on its HTTP listener; a server
// that speaks only HTTP/1.1 fails every request (ErrUpstreamDown). Give
// such upstreams a pull's own transport (ClientOptions.Transport nil).
//
// It is safe for concurrent use. Its owner calls Close when it stops: each connection has a reader goroutine until it is
// closed, or until it has carried no stream for 90 s.
type H2CTransport struct {
	// dialer makes the connections (NewClientConn) with the settings
	// below; it pools nothing itself.
	dialer *http.Transport

	mu    sync.Mutex
	hosts map[string]*h2cHost // by scheme://host:port
}

// h2cHost is the connections to one upstream.
type h2cHost struct {
	conns []*http.ClientConn
	dial  *h2cDial // the dial in progress, nil when none
}

// h2cDial is one dial that requests to the same upstream wait for.
type h2cDial struct {
	done chan struct{}
	err  error
}

// NewH2CTransport returns a transport for the pulls of an edge, to share
// between all of them. It pings a connection that has been silent for
// 5 s and drops it, with every stream on it, when the answer takes 5 s
// more, so a dead upstream is found within about 10 s even while no
// stream flows.
func NewH2CTransport() *H2CTransport { return NewH2CTransportTLS(nil) }

// NewH2CTransportTLS is NewH2CTransport with the configuration of its
// https:// connections, such as a private CA's roots; nil uses the
// defaults (TLS 1.2 or newer, the system's roots). Over TLS, HTTP/2 is
// negotiated with ALPN (RFC 9113 §3.2), and an upstream that does not
// offer it fails the request.
func NewH2CTransportTLS(cfg *tls.Config) *H2CTransport {
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	protos.SetHTTP2(true)
	return &H2CTransport{
		dialer: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: h2cDialTimeout}).DialContext,
			TLSHandshakeTimeout: h2cDialTimeout,
			TLSClientConfig:     cfg,
			IdleConnTimeout:     h2cIdleConn,
			Protocols:           &protos,
			HTTP2: &http.HTTP2Config{
				SendPingTimeout:  h2cPingAfter,
				PingTimeout:      h2cPingTimeout,
				WriteByteTimeout: h2cWriteStall,
			},
		},
		hosts: map[string]*h2cHost{},
	}
}

// RoundTrip sends req as a new stream on the upstream's connection,
// dialing it first if there is none. A request without a body that fails
// because its connection died before it could be answered (the upstream
// restarting: GOAWAY, a reset connection) is sent again once on a new
// connection, as net/http's Transport does for idempotent requests
// (RFC 9110 §9.2.2).
func (t *H2CTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	for attempt := 0; ; attempt++ {
		cc, err := t.reserve(req)
		if err != nil {
			if req.Body != nil {
				req.Body.Close()
			}
			return nil, err
		}
		resp, err := cc.RoundTrip(req)
		hasBody := req.Body != nil && req.Body != http.NoBody
		if err == nil || attempt > 0 || hasBody || cc.Err() == nil || req.Context().Err() != nil {
			return resp, err
		}
	}
}

// reserve returns a connection to req's upstream with a stream reserved
// for req.
func (t *H2CTransport) reserve(req *http.Request) (*http.ClientConn, error) {
	ctx := req.Context()
	scheme, addr := req.URL.Scheme, req.URL.Host
	if _, _, err := net.SplitHostPort(addr); err != nil {
		port := "80"
		if scheme == "https" {
			port = "443"
		}
		addr = net.JoinHostPort(req.URL.Hostname(), port)
	}
	key := scheme + "://" + addr
	for {
		t.mu.Lock()
		h := t.hosts[key]
		if h == nil {
			h = &h2cHost{}
			t.hosts[key] = h
		}
		var found *http.ClientConn
		var dead []*http.ClientConn
		live := h.conns[:0]
		for _, cc := range h.conns {
			if cc.Err() != nil {
				dead = append(dead, cc)
				continue
			}
			live = append(live, cc)
			if found == nil && cc.Reserve() == nil {
				found = cc
			}
		}
		clear(h.conns[len(live):])
		h.conns = live
		d := h.dial
		lead := found == nil && d == nil
		if lead {
			d = &h2cDial{done: make(chan struct{})}
			h.dial = d
		}
		t.mu.Unlock()
		for _, cc := range dead {
			cc.Close()
		}
		if found != nil {
			return found, nil
		}

		if lead {
			cc, err := t.dialer.NewClientConn(ctx, scheme, addr)
			t.mu.Lock()
			h.dial, d.err = nil, err
			if err == nil {
				h.conns = append(h.conns, cc)
			}
			t.mu.Unlock()
			close(d.done)
			if err != nil {
				return nil, err
			}
			continue
		}
		select {
		case <-d.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		// A failed dial fails the requests that waited for it, so that a
		// dead upstream is not dialed once per waiting pull; unless it
		// failed only because the request that made it gave up.
		if d.err != nil && !errors.Is(d.err, context.Canceled) && !errors.Is(d.err, context.DeadlineExceeded) {
			return nil, d.err
		}
	}
}

// Close closes every connection, whatever it carries: the owner calls it
// once its pulls have ended. (A request cancelled before its answer came
// may still count as in flight on its connection, which
// CloseIdleConnections would then keep until the ping timeout.)
func (t *H2CTransport) Close() {
	t.mu.Lock()
	var all []*http.ClientConn
	for key, h := range t.hosts {
		all = append(all, h.conns...)
		h.conns = nil
		if h.dial == nil {
			delete(t.hosts, key)
		}
	}
	t.mu.Unlock()
	for _, cc := range all {
		cc.Close()
	}
}

// CloseIdleConnections closes the connections that carry no stream; it is
// what http.Client's method of the same name calls.
func (t *H2CTransport) CloseIdleConnections() {
	t.mu.Lock()
	var idle []*http.ClientConn
	for key, h := range t.hosts {
		live := h.conns[:0]
		for _, cc := range h.conns {
			if cc.Err() != nil || cc.InFlight() == 0 {
				idle = append(idle, cc)
				continue
			}
			live = append(live, cc)
		}
		clear(h.conns[len(live):])
		h.conns = live
		if len(live) == 0 && h.dial == nil {
			delete(t.hosts, key)
		}
	}
	t.mu.Unlock()
	for _, cc := range idle {
		cc.Close()
	}
}

var _ http.RoundTripper = (*H2CTransport)(nil)
