package rtmp_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluice-media/sluice/ingest/rtmp"
	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/config"
	"github.com/sluice-media/sluice/pipeline/sluicetest"
	"github.com/sluice-media/sluice/pipeline/stagetest"
)

// startRTMPS runs an RTMPS listener beside a plain one, the TLS one first
// in the file, and returns the addresses of both and what Env.LocalAddr
// answers for "rtmp".
func startRTMPS(t *testing.T, ca *sluicetest.TLS) (srv *sluicetest.Server, plain, secure string, local func() net.Addr) {
	t.Helper()
	k := kinds()
	var localAddr func(string) net.Addr
	// A kind that keeps the Env.LocalAddr of its build and runs nothing.
	pipeline.Add(k, "ingest", "local_addr", func(_ *struct{}, env pipeline.Env) (pipeline.Stage, error) {
		localAddr = env.LocalAddr
		return nil, nil
	})
	srv = sluicetest.Start(t, k, fmt.Sprintf(`
server {
  http = "127.0.0.1:0"
  api  = ""
}
ingest "rtmp" "tls" {
  listen            = "127.0.0.1:0"
  handshake_timeout = "2s"
  tls {
    cert_file = %q
    key_file  = %q
  }
}
ingest "rtmp" {
  listen = "127.0.0.1:0"
}
ingest "local_addr" {}
pipeline "live" {
  match = "live/*"
  output "http_flv" {}
}
`, ca.CertFile, ca.KeyFile))
	return srv, srv.Addr("ingest.rtmp"), srv.Addr("ingest.rtmp.tls"), func() net.Addr { return localAddr("rtmp") }
}

// TestRTMPS: ffmpeg publishes over RTMPS; the stream plays over RTMPS and
// over the plain listener beside it; the RTMP client pulls over RTMPS,
// verifying the certificate against the CA it is given; the processors'
// LocalAddr is the plain listener.
func TestRTMPS(t *testing.T) {
	ca := sluicetest.NewTLS(t)
	srv, plain, secure, local := startRTMPS(t, ca)
	sluicetest.PublishLoop(t, sluicetest.Fixture("av.mp4"), "flv", "rtmps://"+secure+"/live/demo")
	waitLive(t, srv, "live/demo")
	if p := srv.Graph.Hub.Stream("live/demo").Info().Publisher; p == nil || p.Proto != "rtmp" {
		t.Errorf("publisher %+v, want proto rtmp", p)
	}

	for _, u := range []string{"rtmps://" + secure + "/live/demo", "rtmp://" + plain + "/live/demo"} {
		t.Run(strings.SplitN(u, ":", 2)[0]+" play", func(t *testing.T) {
			checkPackets(t, sluicetest.RunProbe(t, u, 30*time.Second, "-read_intervals", "%+2", "-show_packets"))
		})
	}

	u, _ := url.Parse("rtmps://" + secure + "/live/demo")
	t.Run("client with the CA", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		rec := &recorder{}
		done := make(chan error, 1)
		go func() {
			done <- rtmp.Pull(ctx, u, rtmp.ClientOptions{TLS: ca.ClientConfig()}, func() (pipeline.Sink, error) { return rec, nil })
		}()
		defer func() { cancel(); <-done }()
		sluicetest.Eventually(t, 10*time.Second, func() bool { return rec.units.Load() >= 50 }, "no units over RTMPS within 10 s")
	})
	t.Run("client without the CA", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err := rtmp.Pull(ctx, u, rtmp.ClientOptions{}, func() (pipeline.Sink, error) { return &recorder{}, nil })
		var ua x509.UnknownAuthorityError
		if !errors.As(err, &ua) || !errors.Is(err, pipeline.ErrUpstreamDown) {
			t.Errorf("pull verifying against the system's roots: %v, want an unknown authority, ErrUpstreamDown", err)
		}
	})

	if got := local(); got == nil || got.String() != plain {
		t.Errorf("Env.LocalAddr(\"rtmp\") = %v, want the plain listener %s", got, plain)
	}
}

// TestRTMPSHandshake: a TLS 1.1 client is refused at the TLS handshake,
// counted and logged as such; a certificate written over the files is
// presented by the next connection, which then carries RTMP as before.
func TestRTMPSHandshake(t *testing.T) {
	ca := sluicetest.NewTLS(t)
	srv, _, secure, _ := startRTMPS(t, ca)
	m := srv.Graph.Metrics

	before := m.CounterValue("sluice_rtmp_closed_total", "protocol_error")
	cfg := ca.ClientConfig()
	cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS11, tls.VersionTLS11
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: cfg}
	if nc, err := d.Dial("tcp", secure); err == nil {
		nc.Close()
		t.Fatal("a TLS 1.1 handshake succeeded")
	}
	sluicetest.Eventually(t, 5*time.Second, func() bool {
		return m.CounterValue("sluice_rtmp_closed_total", "protocol_error") == before+1
	}, "the refused handshake was not counted")
	// The line is written just after the count.
	sluicetest.Eventually(t, 5*time.Second, func() bool {
		return len(srv.Logs.Lines("connection closed during TLS handshake", "stage=ingest.rtmp.tls", "unsupported versions")) > 0
	}, "the refused handshake was not logged")
	if lines := srv.Logs.Lines("connection closed during TLS handshake", "stage=ingest.rtmp.tls", "unsupported versions"); len(lines) != 1 {
		t.Errorf("log lines %q, want one", lines)
	}

	next := ca.Issue("sluice-test-renewed")
	sluicetest.Eventually(t, 10*time.Second, func() bool {
		return ca.PeerCertificate(secure).Equal(next)
	}, "the renewed certificate was never presented")
	if got := m.CounterValue("sluice_tls_certificate_reloads_total", "ingest.rtmp.tls", "ok"); got != 1 {
		t.Errorf("sluice_tls_certificate_reloads_total{ingest.rtmp.tls,ok} = %d, want 1", got)
	}
	sluicetest.PublishLoop(t, sluicetest.Fixture("av.mp4"), "flv", "rtmps://"+secure+"/live/renewed")
	waitLive(t, srv, "live/renewed")
}

// TestRTMPSDiagnostics: a tls block whose files cannot be loaded stops the
// build with a diagnostic at the attribute naming the file at fault.
func TestRTMPSDiagnostics(t *testing.T) {
	ca := sluicetest.NewTLS(t)
	missing := filepath.Join(t.TempDir(), "missing.pem")
	for _, tc := range []struct {
		name      string
		cert, key string
		line      int
	}{
		{"missing certificate", missing, ca.KeyFile, 4},
		{"missing key", ca.CertFile, missing, 5},
		{"certificate for a key", ca.KeyFile, ca.KeyFile, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := fmt.Sprintf(`ingest "rtmp" {
  listen = "127.0.0.1:0"
  tls {
    cert_file = %q
    key_file  = %q
  }
}
`, tc.cert, tc.key)
			k := kinds()
			f, diags := config.Parse("rtmps.hcl", []byte(src), config.Options{Kinds: k})
			if diags.HasErrors() {
				t.Fatalf("parse: %v", diags)
			}
			_, diags = pipeline.Build(f, k, slog.New(slog.DiscardHandler))
			if len(diags) != 1 || diags[0].Subject == nil || diags[0].Subject.Start.Line != tc.line {
				t.Fatalf("diagnostics %v, want one at line %d", diags, tc.line)
			}
		})
	}
}

// TestConformanceTLS checks the rtmp kind with a tls block: loading the
// certificate at build opens no socket and starts nothing, and a client
// connected but silent before its TLS handshake is closed when the stage
// stops.
func TestConformanceTLS(t *testing.T) {
	ca := sluicetest.NewTLS(t)
	k := pipeline.NewKinds()
	rtmp.Register(k)
	stagetest.Conformance(t, k, stagetest.Case{
		Type: "ingest",
		Kind: "rtmp",
		Body: fmt.Sprintf(`
listen = "127.0.0.1:0"
tls {
  cert_file = %q
  key_file  = %q
}`, ca.CertFile, ca.KeyFile),
		File: `
server {
  http = "127.0.0.1:0"
  api  = ""
}
pipeline "live" {
  match = ["live/*"]
}
`,
		While: func(t testing.TB, r stagetest.Running) {
			accepted := stagetest.Sum(r.Runtime.Metrics, "sluice_rtmp_connections_total")
			nc, err := net.Dial("tcp", r.Stage.(*rtmp.Server).Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			go func() {
				defer nc.Close()
				_, _ = io.Copy(io.Discard, nc)
			}()
			sluicetest.Eventually(t, 10*time.Second, func() bool {
				return stagetest.Sum(r.Runtime.Metrics, "sluice_rtmp_connections_total") > accepted
			}, "the server did not accept the connection")
		},
	})
}
