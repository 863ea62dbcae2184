package edge_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/sluice-media/sluice/pipeline/sluicetest"
)

// tlsOrigin runs an origin with RTMPS and HTTPS listeners beside its
// plain ones, presenting a certificate of ca, and returns it with the TLS
// addresses.
func tlsOrigin(t *testing.T, ca *sluicetest.TLS) (o server, rtmps, https string) {
	t.Helper()
	srv := sluicetest.Start(t, kinds(), ca.Origin(`node = "o-tls"`))
	return ready(t, srv), srv.Addr("ingest.rtmp.tls"), srv.Addr("server.https")
}

// TestEdgeOverTLS: an edge pulls from an origin over RTMPS and over
// HTTPS, verifying the origin's certificate against a private CA
// (tls_ca_file). Over HTTPS with http2 the pulls of two streams share one
// TLS connection (HTTP/2 by ALPN); with http2 = false each has its own.
// Without the CA the edge refuses the origin's certificate, and its
// players are told the stream is unavailable.
func TestEdgeOverTLS(t *testing.T) {
	ca := sluicetest.NewTLS(t)
	o, rtmps, https := tlsOrigin(t, ca)
	sluicetest.PublishLoop(t, sluicetest.Fixture("av.mp4"), "flv", "rtmps://"+rtmps+"/live/a")
	waitLive(t, o, "live/a")
	publish(t, o, "live/b")
	m := o.Graph.Metrics

	for _, tc := range []struct {
		name, upstream, extra string
		proto                 string // the origin's play sessions
		conns                 uint64 // the origin's HTTPS connections, 0 for RTMPS
	}{
		{"rtmps", "rtmps://" + rtmps, "", "rtmp", 0},
		{"https, HTTP/2", "https://" + https, "http2 = true", "http-flv", 1},
		{"https, HTTP/1.1", "https://" + https, "http2 = false", "http-flv", 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sessions := func() uint64 { return playSessions(o, tc.proto) }
			conns := func() uint64 { return m.CounterValue("sluice_https_connections_total") }
			beforeSessions, beforeConns := sessions(), conns()
			e := edgeServer(t, "e-tls", fmt.Sprintf(`
    upstreams       = [%q]
    tls_ca_file     = %q
    health_interval = "1h"
    %s
`, tc.upstream, ca.CAFile, tc.extra), "")
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			for _, path := range []string{"live/a", "live/b"} {
				p := play(t, ctx, "http://"+e.http+"/"+path+".flv")
				p.waitFirst(t, 20*time.Second)
				sluicetest.Eventually(t, 10*time.Second, func() bool { return len(p.snapshot()) >= 60 },
					"%s: fewer than 60 frames through the edge", path)
				if err := monotonic(p.snapshot()); err != nil {
					t.Errorf("%s: %v", path, err)
				}
			}
			if got := sessions() - beforeSessions; got != 2 {
				t.Errorf("the origin admitted %d %s play sessions for the edge's two streams, want 2", got, tc.proto)
			}
			if tc.conns > 0 {
				want := tc.conns + 1 // and the first health check, a TCP dial
				if got := conns() - beforeConns; got != want {
					t.Errorf("the origin's HTTPS listener accepted %d connections, want %d (pulls and one health check)", got, want)
				}
			}
		})
	}

	t.Run("without the CA", func(t *testing.T) {
		e := edgeServer(t, "e-no-ca", fmt.Sprintf(`
    upstreams       = ["https://%s"]
    health_interval = "1h"
`, https), "")
		resp, err := http.Get("http://" + e.http + "/live/a.flv")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadGateway {
			t.Errorf("status %d, want 502: the edge cannot verify the origin", resp.StatusCode)
		}
		if lines := logLines(e.Logs.String(), "certificate signed by unknown authority"); len(lines) == 0 {
			t.Errorf("no log line tells why the pull failed:\n%s", e.Logs.String())
		}
	})
}
