package mpegtsudp_test

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sluice-media/sluice/pipeline/sluicetest"
)

// pushRaw opens a chunked POST of /live/NAME.ts by hand, so that the test
// can end the body the ways real clients do: cleanly, cut, stalled, reset.
func pushRaw(t *testing.T, addr, name string, ts []byte) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "POST /live/%s.ts HTTP/1.1\r\nHost: x\r\nContent-Type: video/mp2t\r\nTransfer-Encoding: chunked\r\n\r\n", name)
	fmt.Fprintf(c, "%x\r\n", len(ts))
	if _, err := c.Write(ts); err != nil {
		t.Fatal(err)
	}
	_, _ = c.Write([]byte("\r\n"))
	return c.(*net.TCPConn)
}

func status(t *testing.T, c net.Conn) int {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestHTTPPushEndings: however a push ends, the answer says whose doing it
// was, and the log says it too. A client that breaks its connection is a
// client error, never a shutdown (net/http cancels the request context in
// both cases), and a body that fails is never answered 200.
func TestHTTPPushEndings(t *testing.T) {
	srv := start(t, "", "")
	ha := srv.Addr("server.http")
	ts, err := os.ReadFile(demuxFixture("h265_opus.ts"))
	if err != nil {
		t.Fatal(err)
	}
	ts = ts[:len(ts)/188/2*188] // half the file, whole packets

	t.Run("clean end", func(t *testing.T) {
		c := pushRaw(t, ha, "clean", ts)
		_, _ = c.Write([]byte("0\r\n\r\n"))
		if got := status(t, c); got != http.StatusNoContent {
			t.Fatalf("status %d, want 204", got)
		}
	})
	t.Run("cut body", func(t *testing.T) {
		c := pushRaw(t, ha, "cut", ts)
		// A chunk announced and never finished, then the write side shut:
		// the body is truncated, the connection still readable.
		_, _ = c.Write([]byte("1000\r\nxx"))
		_ = c.CloseWrite()
		if got := status(t, c); got < 400 || got > 499 {
			t.Fatalf("status %d, want a 4xx", got)
		}
	})
	t.Run("reset", func(t *testing.T) {
		c := pushRaw(t, ha, "reset", ts)
		sluicetest.Eventually(t, 5*time.Second, func() bool {
			s := srv.Graph.Hub.Stream("live/reset")
			return s != nil && s.Info().Publisher != nil
		}, "the push never published")
		_ = c.SetLinger(0) // close with an RST
		c.Close()
		sluicetest.Eventually(t, 5*time.Second, func() bool {
			return strings.Contains(srv.Logs.String(), "stream=live/reset") &&
				logLine(srv.Logs.String(), "publish ended", "stream=live/reset") != ""
		}, "the reset push did not end")
		line := logLine(srv.Logs.String(), "publish ended", "stream=live/reset")
		if !strings.Contains(line, "cause=client_closed") {
			t.Fatalf("a reset push ended with %q, want cause=client_closed", line)
		}
	})
}

// logLine returns the first log line that contains every part.
func logLine(logs string, parts ...string) string {
	if l := sluicetest.LogLines(logs, parts...); len(l) > 0 {
		return l[0]
	}
	return ""
}
