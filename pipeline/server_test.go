package pipeline_test

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/sluicetest"
)

// TestHTTPListenerProtocols: the shared HTTP listener answers HTTP/1.1 and
// cleartext HTTP/2 (prior knowledge) on one port, and counts connections,
// not requests: a client's keep-alive or multiplexed requests are one
// connection, open until the client closes it.
func TestHTTPListenerProtocols(t *testing.T) {
	srv := sluicetest.Start(t, pipeline.NewKinds(), `
server {
  http = "127.0.0.1:0"
  api  = ""
}
`)
	url := "http://" + srv.Addr("server.http") + "/live/none.flv"
	m := srv.Graph.Metrics
	accepted := func() uint64 { return m.CounterValue("sluice_http_connections_total") }
	open := func() float64 { return m.Gauge("sluice_http_connections", "").With().Value() }

	var transports []*http.Transport
	for _, tc := range []struct {
		proto string
		set   func(*http.Protocols)
	}{
		{"HTTP/1.1", func(p *http.Protocols) { p.SetHTTP1(true) }},
		{"HTTP/2.0", func(p *http.Protocols) { p.SetUnencryptedHTTP2(true) }},
	} {
		var p http.Protocols
		tc.set(&p)
		tr := &http.Transport{Protocols: &p}
		t.Cleanup(tr.CloseIdleConnections)
		transports = append(transports, tr)
		for range 3 {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			resp, err := tr.RoundTrip(req)
			if err != nil {
				cancel()
				t.Fatalf("%s GET: %v", tc.proto, err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			cancel()
			if resp.Proto != tc.proto || resp.StatusCode != http.StatusNotFound {
				t.Errorf("%s GET of an unknown stream: %s %s, want %s 404", tc.proto, resp.Proto, resp.Status, tc.proto)
			}
		}
	}
	if got := accepted(); got != 2 {
		t.Errorf("sluice_http_connections_total = %d after three requests on each of two connections, want 2", got)
	}
	if got := open(); got != 2 {
		t.Errorf("sluice_http_connections = %v with two idle client connections, want 2", got)
	}
	for _, tr := range transports {
		tr.CloseIdleConnections()
	}
	sluicetest.Eventually(t, 10*time.Second, func() bool { return open() == 0 },
		"sluice_http_connections = %v after the clients closed their connections, want 0", open())
}
