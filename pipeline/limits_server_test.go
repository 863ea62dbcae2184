package pipeline_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/sluicetest"
)

// dialFrom connects to addr from the loopback address local
// ("127.0.0.2"), so that one test can be several clients.
func dialFrom(t *testing.T, local, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 10 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// closedByServer reports whether the server closed c: a read ends with
// EOF or a reset rather than the deadline.
func closedByServer(c net.Conn, within time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(within))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

// TestConnectionLimits: the listeners close a connection past
// max_connections or max_connections_per_ip as soon as they accept it,
// count it, log it once per address, and take connections again once
// others close.
func TestConnectionLimits(t *testing.T) {
	srv := sluicetest.Start(t, pipeline.NewKinds(), `
server {
  http = "127.0.0.1:0"
  api  = ""
  limits {
    max_connections        = 3
    max_connections_per_ip = 2
    exempt                 = []
    http_header_timeout    = "5m"
  }
}
`)
	addr := srv.Addr("server.http")
	m := srv.Graph.Metrics
	hits := func(limit string) uint64 { return m.CounterValue("sluice_limit_hits_total", limit) }
	open := func() float64 { return m.Gauge("sluice_http_connections", "").With().Value() }

	a1, a2 := dialFrom(t, "127.0.0.1", addr), dialFrom(t, "127.0.0.1", addr)
	sluicetest.Eventually(t, 10*time.Second, func() bool { return open() == 2 }, "two connections open")
	a3 := dialFrom(t, "127.0.0.1", addr)
	if !closedByServer(a3, 10*time.Second) {
		t.Fatal("a third connection from one address was not closed")
	}
	sluicetest.Eventually(t, 10*time.Second, func() bool { return hits(pipeline.LimitConnectionsPerIP) == 1 }, "connections_per_ip hits")

	dialFrom(t, "127.0.0.2", addr)
	sluicetest.Eventually(t, 10*time.Second, func() bool { return open() == 3 }, "a connection from another address")
	b2 := dialFrom(t, "127.0.0.2", addr)
	if !closedByServer(b2, 10*time.Second) {
		t.Fatal("a fourth connection in all was not closed")
	}
	sluicetest.Eventually(t, 10*time.Second, func() bool { return hits(pipeline.LimitConnections) == 1 }, "connections hits")

	// Each refused once more: still one line per address and limit.
	closedByServer(dialFrom(t, "127.0.0.1", addr), 10*time.Second)
	closedByServer(dialFrom(t, "127.0.0.2", addr), 10*time.Second)
	sluicetest.Eventually(t, 10*time.Second, func() bool {
		return hits(pipeline.LimitConnectionsPerIP)+hits(pipeline.LimitConnections) == 4
	}, "four refusals")
	if n := len(srv.Logs.Lines("connection refused", "limit=connections_per_ip")); n != 1 {
		t.Errorf("%d log lines for connections_per_ip, want 1", n)
	}

	a1.Close()
	a2.Close()
	sluicetest.Eventually(t, 10*time.Second, func() bool { return open() == 1 }, "closed connections leave")
	c := dialFrom(t, "127.0.0.1", addr)
	if closedByServer(c, 200*time.Millisecond) {
		t.Fatal("a connection was refused after others closed")
	}
}

// TestHTTPHeaderLimits: the HTTP listener's header bounds are counted and
// logged like every limit: a header past http_max_header_bytes (431), a
// client that does not finish its header, or sends nothing, within
// http_header_timeout, and a request that is not HTTP (400); a kept-alive
// connection that only idles is no hit.
func TestHTTPHeaderLimits(t *testing.T) {
	srv := sluicetest.Start(t, pipeline.NewKinds(), `
server {
  http = "127.0.0.1:0"
  api  = ""
  limits {
    http_max_header_bytes = "1KiB"
    http_header_timeout   = "300ms"
    http_idle_timeout     = "1s"
  }
}
`)
	addr := srv.Addr("server.http")
	m := srv.Graph.Metrics
	hits := func(limit string) uint64 { return m.CounterValue("sluice_limit_hits_total", limit) }
	answer := func(c net.Conn) string {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		line, _ := bufio.NewReader(c).ReadString('\n')
		return strings.TrimSpace(line)
	}

	big := dialFrom(t, "127.0.0.1", addr)
	_, _ = io.WriteString(big, "GET /live/x.flv HTTP/1.1\r\nHost: x\r\nX-Pad: "+strings.Repeat("a", 8<<10)+"\r\n\r\n")
	if got := answer(big); !strings.HasPrefix(got, "HTTP/1.1 431") {
		t.Errorf("a header of 8 KiB: %q, want 431", got)
	}
	sluicetest.Eventually(t, 10*time.Second, func() bool { return hits(pipeline.LimitHTTPHeaderBytes) == 1 }, "http_header_bytes hits")

	slow := dialFrom(t, "127.0.0.1", addr)
	_, _ = io.WriteString(slow, "GET /live/x.flv HTTP/1.1\r\nHost: x\r\n")
	silent := dialFrom(t, "127.0.0.2", addr)
	for _, c := range []net.Conn{slow, silent} {
		if !closedByServer(c, 10*time.Second) {
			t.Fatal("a client that did not send its header was not closed")
		}
	}
	sluicetest.Eventually(t, 10*time.Second, func() bool { return hits(pipeline.LimitHTTPHeaderTimeout) == 2 }, "http_header_timeout hits")

	garbage := dialFrom(t, "127.0.0.1", addr)
	_, _ = garbage.Write([]byte("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not HTTP at all\r\n\r\n"))
	if got := answer(garbage); !strings.HasPrefix(got, "HTTP/1.1 400") {
		t.Errorf("bytes that are not HTTP: %q, want 400", got)
	}
	sluicetest.Eventually(t, 10*time.Second, func() bool { return m.CounterValue("sluice_http_malformed_requests_total", "http") == 1 }, "malformed requests")

	idle := dialFrom(t, "127.0.0.1", addr)
	_, _ = io.WriteString(idle, "GET /live/none.flv HTTP/1.1\r\nHost: x\r\n\r\n")
	if got := answer(idle); !strings.HasPrefix(got, "HTTP/1.1 404") {
		t.Fatalf("a request: %q", got)
	}
	if !closedByServer(idle, 10*time.Second) {
		t.Fatal("an idle kept-alive connection was not closed after http_idle_timeout")
	}
	if n := hits(pipeline.LimitHTTPHeaderTimeout); n != 2 {
		t.Errorf("http_header_timeout hits = %d after an idle connection's timeout, want still 2", n)
	}
	// One line per limit and address: the two header timeouts came from
	// two addresses.
	for _, tc := range []struct {
		part string
		want int
	}{
		{"limit=http_header_bytes", 1},
		{"limit=http_header_timeout", 2},
		{"does not parse as HTTP", 1},
	} {
		if n := len(srv.Logs.Lines(tc.part)); n != tc.want {
			t.Errorf("%d log lines with %q, want %d", n, tc.part, tc.want)
		}
	}
}

// TestLimitsApplyOnReload: a reload that changes only the limits block is
// a change of its own in the plan, and the next sessions and connections
// are held to the new values, without a stage being replaced (the HTTP
// listener's own limits aside, which its stage takes at start).
func TestLimitsApplyOnReload(t *testing.T) {
	file := func(streams, perIP int) string {
		return `
server {
  http = "127.0.0.1:0"
  api  = ""
  limits {
    max_streams            = ` + strconv.Itoa(streams) + `
    max_connections_per_ip = ` + strconv.Itoa(perIP) + `
    exempt                 = []
    http_header_timeout    = "5m"
  }
}
pipeline "live" { match = "live/*" }
`
	}
	srv := sluicetest.Start(t, pipeline.NewKinds(), file(1, 0))
	gate := srv.Node.Graph().Gate
	publish := func(path string) error {
		p, err := gate.Publish(context.Background(), pipeline.Request{Path: path, Client: pipeline.ClientInfo{Proto: "test", Remote: "192.0.2.1:1"}})
		if err == nil {
			t.Cleanup(p.Close)
		}
		return err
	}
	if err := publish("live/a"); err != nil {
		t.Fatal(err)
	}
	if err := publish("live/b"); !errors.Is(err, pipeline.ErrTooManyStreams) {
		t.Fatalf("a second stream under max_streams = 1: %v", err)
	}
	addr := srv.Addr("server.http")
	held := dialFrom(t, "127.0.0.1", addr)
	plan, err := srv.Reload(t, file(2, 1), false)
	if err != nil {
		t.Fatal(err)
	}
	var changed []string
	for _, c := range plan.Changes {
		changed = append(changed, c.Address)
	}
	if strings.Join(changed, " ") != "server.limits" {
		t.Errorf("the plan changes %v, want server.limits alone", changed)
	}
	if err := publish("live/b"); err != nil {
		t.Errorf("a second stream after max_streams became 2: %v", err)
	}
	// The connection from before stays; a second from its address is
	// now one too many.
	if !closedByServer(dialFrom(t, "127.0.0.1", addr), 10*time.Second) {
		t.Error("a second connection from one address was taken after max_connections_per_ip became 1")
	}
	if closedByServer(held, 200*time.Millisecond) {
		t.Error("the connection made before the reload was closed")
	}
}
