package pipeline_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/config"
	"github.com/sluice-media/sluice/pipeline/sluicetest"
)

// TestHTTPSListener: server.https serves the shared router over TLS, HTTP/1.1
// and HTTP/2 as ALPN chooses, counting its connections apart from
// server.http; the API speaks HTTPS with api_tls; TLS 1.1 is refused; and a
// certificate written over the files is presented by the next connection,
// without a restart.
func TestHTTPSListener(t *testing.T) {
	ca := sluicetest.NewTLS(t)
	srv := sluicetest.Start(t, pipeline.NewKinds(), fmt.Sprintf(`
server {
  http  = "127.0.0.1:0"
  https = "127.0.0.1:0"
  tls {
    cert_file = %q
    key_file  = %q
  }
  api = "127.0.0.1:0"
  api_tls {
    cert_file = %[1]q
    key_file  = %[2]q
  }
}
`, ca.CertFile, ca.KeyFile))
	httpsAddr, apiAddr := srv.Addr("server.https"), srv.Addr("server.api")
	m := srv.Graph.Metrics
	accepted := func(name string) uint64 { return m.CounterValue(name) }

	get := func(t *testing.T, tr *http.Transport, url string) *http.Response {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}

	t.Run("shared router, HTTP/1.1 and HTTP/2", func(t *testing.T) {
		for _, tc := range []struct {
			proto string
			set   func(*http.Protocols)
		}{
			{"HTTP/1.1", func(p *http.Protocols) { p.SetHTTP1(true) }},
			{"HTTP/2.0", func(p *http.Protocols) { p.SetHTTP2(true) }},
		} {
			var p http.Protocols
			tc.set(&p)
			tr := &http.Transport{Protocols: &p, TLSClientConfig: ca.ClientConfig()}
			resp := get(t, tr, "https://"+httpsAddr+"/live/none.flv")
			tr.CloseIdleConnections()
			// The router's own answer for a path no stage serves.
			if resp.Proto != tc.proto || resp.StatusCode != http.StatusNotFound {
				t.Errorf("%s GET: %s %s, want %s 404", tc.proto, resp.Proto, resp.Status, tc.proto)
			}
		}
		if got := accepted("sluice_https_connections_total"); got != 2 {
			t.Errorf("sluice_https_connections_total = %d after two connections, want 2", got)
		}
		if got := accepted("sluice_http_connections_total"); got != 0 {
			t.Errorf("sluice_http_connections_total = %d, want 0: HTTPS connections are counted apart", got)
		}
		sluicetest.Eventually(t, 10*time.Second, func() bool { return m.Gauge("sluice_https_connections", "").With().Value() == 0 },
			"sluice_https_connections does not fall back to 0")
	})

	t.Run("API over HTTPS", func(t *testing.T) {
		tr := &http.Transport{TLSClientConfig: ca.ClientConfig()}
		defer tr.CloseIdleConnections()
		if resp := get(t, tr, "https://"+apiAddr+"/api/v1/health"); resp.StatusCode != http.StatusOK {
			t.Errorf("GET /api/v1/health over HTTPS: %s", resp.Status)
		}
		plain := &http.Transport{}
		defer plain.CloseIdleConnections()
		if resp := get(t, plain, "http://"+apiAddr+"/api/v1/health"); resp.StatusCode == http.StatusOK {
			t.Error("the API answered a cleartext request; with api_tls it speaks HTTPS only")
		}
	})

	t.Run("TLS 1.1 refused", func(t *testing.T) {
		for _, addr := range []string{httpsAddr, apiAddr} {
			cfg := ca.ClientConfig()
			cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS11, tls.VersionTLS11
			d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: cfg}
			if nc, err := d.Dial("tcp", addr); err == nil {
				nc.Close()
				t.Errorf("%s: a TLS 1.1 handshake succeeded", addr)
			}
		}
	})

	t.Run("certificate swapped on disk", func(t *testing.T) {
		next := ca.Issue("sluice-test-renewed")
		for _, addr := range []string{httpsAddr, apiAddr} {
			sluicetest.Eventually(t, 10*time.Second, func() bool {
				return ca.PeerCertificate(addr).Equal(next)
			}, "%s never presented the renewed certificate", addr)
		}
		for _, l := range []string{"server.https", "server.api"} {
			if got := m.CounterValue("sluice_tls_certificate_reloads_total", l, "ok"); got != 1 {
				t.Errorf("sluice_tls_certificate_reloads_total{%s,ok} = %d, want 1", l, got)
			}
		}
		if got := m.Gauge("sluice_tls_certificate_expiry_timestamp_seconds", "", "listener").With("server.https").Value(); got != float64(next.NotAfter.Unix()) {
			t.Errorf("expiry gauge %v, want the renewed certificate's %v", got, next.NotAfter.Unix())
		}
		if lines := srv.Logs.Lines("TLS certificate reloaded", "stage=server.https", "sluice-test-renewed"); len(lines) != 1 {
			t.Errorf("reload log lines %q, want one", lines)
		}
	})
}

// TestServerTLSDiagnostics: a certificate or key that cannot be loaded
// stops the build with a diagnostic at the attribute naming the file.
func TestServerTLSDiagnostics(t *testing.T) {
	ca := sluicetest.NewTLS(t)
	other := sluicetest.NewTLS(t)
	missing := filepath.Join(t.TempDir(), "missing.pem")
	for _, tc := range []struct {
		name       string
		block      string
		cert, key  string
		line       int // of the attribute at fault
		wantDetail string
	}{
		{"missing certificate", "tls", missing, ca.KeyFile, 5, "no such file"},
		{"key of another certificate", "tls", ca.CertFile, other.KeyFile, 6, "private key does not match"},
		{"missing API key", "api_tls", ca.CertFile, missing, 6, "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			https := `https = "127.0.0.1:0"`
			if tc.block == "api_tls" {
				https = ""
			}
			src := fmt.Sprintf(`server {
  api = "127.0.0.1:0"
  %s
  %s {
    cert_file = %q
    key_file  = %q
  }
}
`, https, tc.block, tc.cert, tc.key)
			f, diags := config.Parse("tls.hcl", []byte(src), config.Options{})
			if diags.HasErrors() {
				t.Fatalf("parse: %v", diags)
			}
			_, diags = pipeline.Build(f, pipeline.NewKinds(), slog.New(slog.DiscardHandler))
			if len(diags) != 1 {
				t.Fatalf("diagnostics %v, want one", diags)
			}
			d := diags[0]
			if d.Subject == nil || d.Subject.Start.Line != tc.line || !strings.Contains(d.Detail, tc.wantDetail) {
				t.Errorf("diagnostic at %v: %s: %s; want line %d and %q", d.Subject, d.Summary, d.Detail, tc.line, tc.wantDetail)
			}
		})
	}
}
