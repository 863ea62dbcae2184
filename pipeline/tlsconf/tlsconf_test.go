package tlsconf_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-media/sluice/pipeline/sluicetest"
	"github.com/sluice-media/sluice/pipeline/tlsconf"
)

// serve runs a TLS listener with cfg on loopback until the test ends,
// completing each handshake and closing the connection, and returns its
// address.
func serve(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
			_ = nc.(*tls.Conn).Handshake()
			nc.Close()
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return ln.Addr().String()
}

func TestLoadErrors(t *testing.T) {
	ca := sluicetest.NewTLS(t)
	other := sluicetest.NewTLS(t) // a key that matches another certificate
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not PEM at all\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")
	for _, tc := range []struct {
		name       string
		cert, key  string
		wantKey    bool
		wantInText string
	}{
		{"missing certificate", missing, ca.KeyFile, false, "no such file"},
		{"missing key", ca.CertFile, missing, true, "no such file"},
		{"certificate not PEM", garbage, ca.KeyFile, false, "no PEM CERTIFICATE block"},
		{"key not PEM", ca.CertFile, garbage, true, "failed to find any PEM data in key input"},
		{"key of another certificate", ca.CertFile, other.KeyFile, true, "private key does not match public key"},
		{"key given as the certificate", ca.KeyFile, ca.KeyFile, false, "no PEM CERTIFICATE block"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tlsconf.Load(tc.cert, tc.key, tlsconf.Options{})
			var fe *tlsconf.FileError
			if !errors.As(err, &fe) {
				t.Fatalf("Load: %v, want a *FileError", err)
			}
			want := tc.cert
			if tc.wantKey {
				want = tc.key
			}
			if fe.Key != tc.wantKey || fe.Path != want {
				t.Errorf("FileError{Path: %q, Key: %v}, want {%q, %v}", fe.Path, fe.Key, want, tc.wantKey)
			}
			if !strings.Contains(err.Error(), tc.wantInText) || strings.Count(err.Error(), want) != 1 {
				t.Errorf("error %q: want the file, once, and %q", err, tc.wantInText)
			}
		})
	}
}

// TestMinVersion: TLS 1.0 and 1.1 clients are refused (RFC 8996); 1.2 and
// 1.3 clients get in.
func TestMinVersion(t *testing.T) {
	ca := sluicetest.NewTLS(t)
	c, err := tlsconf.Load(ca.CertFile, ca.KeyFile, tlsconf.Options{})
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, c.ServerConfig())
	for _, tc := range []struct {
		name    string
		version uint16
		ok      bool
	}{
		{"TLS 1.0", tls.VersionTLS10, false},
		{"TLS 1.1", tls.VersionTLS11, false},
		{"TLS 1.2", tls.VersionTLS12, true},
		{"TLS 1.3", tls.VersionTLS13, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := ca.ClientConfig()
			cfg.MinVersion, cfg.MaxVersion = tc.version, tc.version
			d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: cfg}
			nc, err := d.Dial("tcp", addr)
			if err == nil {
				nc.Close()
			}
			if (err == nil) != tc.ok {
				t.Errorf("handshake error %v, want success %v", err, tc.ok)
			}
		})
	}
}

// reloads records what Options.Reloaded was told.
type reloads struct {
	mu      sync.Mutex
	ok      []string // serials
	failed  []error
	logs    *sluicetest.LogBuffer
	options tlsconf.Options
}

func newReloads() *reloads {
	r := &reloads{logs: &sluicetest.LogBuffer{}}
	r.options = tlsconf.Options{
		Log: slog.New(slog.NewTextHandler(r.logs, nil)),
		Reloaded: func(leaf *x509.Certificate, err error) {
			r.mu.Lock()
			defer r.mu.Unlock()
			if err != nil {
				r.failed = append(r.failed, err)
				return
			}
			r.ok = append(r.ok, leaf.SerialNumber.String())
		},
	}
	return r
}

func (r *reloads) counts() (ok, failed int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.ok), len(r.failed)
}

// TestReload: a certificate written over the files is presented by the
// next handshake after the check interval, without a restart.
func TestReload(t *testing.T) {
	ca := sluicetest.NewTLS(t)
	r := newReloads()
	c, err := tlsconf.Load(ca.CertFile, ca.KeyFile, r.options)
	if err != nil {
		t.Fatal(err)
	}
	tlsconf.SetCheckInterval(c, 10*time.Millisecond)
	addr := serve(t, c.ServerConfig())
	if got := ca.PeerCertificate(addr).Subject.CommonName; got != "sluice-test-1" {
		t.Fatalf("first certificate %q, want sluice-test-1", got)
	}
	next := ca.Issue("sluice-test-2")
	sluicetest.Eventually(t, 5*time.Second, func() bool {
		return ca.PeerCertificate(addr).SerialNumber.Cmp(next.SerialNumber) == 0
	}, "the new certificate was never presented")
	if c.Leaf().Subject.CommonName != "sluice-test-2" {
		t.Errorf("Leaf is %q, want sluice-test-2", c.Leaf().Subject.CommonName)
	}
	if ok, _ := r.counts(); ok < 1 {
		t.Error("Reloaded was not told of the new certificate")
	}
	if lines := r.logs.Lines("TLS certificate reloaded", "CN=sluice-test-2"); len(lines) != 1 {
		t.Errorf("log lines for the reload: %q, want one", lines)
	}
}

// TestReloadBadPair: files that change into something that cannot be
// loaded leave the previous certificate in use, with one log line and one
// failure however many handshakes follow; fixed files are then loaded.
func TestReloadBadPair(t *testing.T) {
	ca := sluicetest.NewTLS(t)
	r := newReloads()
	c, err := tlsconf.Load(ca.CertFile, ca.KeyFile, r.options)
	if err != nil {
		t.Fatal(err)
	}
	tlsconf.SetCheckInterval(c, time.Millisecond)
	addr := serve(t, c.ServerConfig())
	first := ca.PeerCertificate(addr)

	for _, tc := range []struct {
		name    string
		breakIt func()
	}{
		{"truncated certificate", func() {
			if err := os.WriteFile(ca.CertFile, []byte("-----BEGIN CERTIFICATE-----\nAAAA"), 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{"removed key", func() {
			if err := os.Remove(ca.KeyFile); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			good := ca.PeerCertificate(addr)
			_, failedBefore := r.counts()
			warnBefore := len(r.logs.Lines("level=WARN", "cannot be loaded"))
			tc.breakIt()
			for range 5 {
				time.Sleep(5 * time.Millisecond)
				if got := ca.PeerCertificate(addr); !got.Equal(good) {
					t.Fatalf("presented %s after the files broke, want the previous %s", got.Subject, good.Subject)
				}
			}
			if _, failed := r.counts(); failed != failedBefore+1 {
				t.Errorf("Reloaded told of %d failures, want 1", failed-failedBefore)
			}
			lines := r.logs.Lines("level=WARN", "cannot be loaded")
			if n := len(lines) - warnBefore; n != 1 {
				t.Errorf("%d warnings, want 1:\n%s", n, strings.Join(lines, "\n"))
			} else if l := lines[len(lines)-1]; !strings.Contains(l, "cert_file="+ca.CertFile) || !strings.Contains(l, "key_file="+ca.KeyFile) {
				t.Errorf("warning %q does not name both files", l)
			}
			fixed := ca.Issue("fixed " + tc.name)
			sluicetest.Eventually(t, 5*time.Second, func() bool {
				return ca.PeerCertificate(addr).Equal(fixed)
			}, "the fixed pair was never loaded")
		})
	}
	if ca.PeerCertificate(addr).Equal(first) {
		t.Error("still the first certificate")
	}
}

func TestClientConfig(t *testing.T) {
	ca := sluicetest.NewTLS(t)
	c, err := tlsconf.Load(ca.CertFile, ca.KeyFile, tlsconf.Options{})
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, c.ServerConfig())
	dial := func(cfg *tls.Config) error {
		d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: cfg}
		nc, err := d.Dial("tcp", addr)
		if err == nil {
			nc.Close()
		}
		return err
	}

	sys, err := tlsconf.ClientConfig("")
	if err != nil || sys.RootCAs != nil || sys.MinVersion != tls.VersionTLS12 {
		t.Fatalf(`ClientConfig(""): %+v, %v; want the system roots, TLS 1.2+`, sys, err)
	}
	var ue x509.UnknownAuthorityError
	if err := dial(sys); !errors.As(err, &ue) {
		t.Errorf("system roots against the test CA: %v, want an unknown authority", err)
	}
	private, err := tlsconf.ClientConfig(ca.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := dial(private); err != nil {
		t.Errorf("with the CA file: %v", err)
	}
	for _, bad := range []string{filepath.Join(t.TempDir(), "none.pem"), ca.KeyFile} {
		_, err := tlsconf.ClientConfig(bad)
		var fe *tlsconf.FileError
		if !errors.As(err, &fe) || fe.Path != bad {
			t.Errorf("ClientConfig(%s): %v, want a *FileError naming it", bad, err)
		}
	}
}
