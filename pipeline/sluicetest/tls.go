package sluicetest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TLS is a certificate authority made for one test and a server
// certificate it signed for 127.0.0.1, ::1 and localhost, as PEM files in
// the test's temporary directory: CAFile for clients (tls_ca_file,
// ffmpeg's -ca_file), CertFile and KeyFile for a listener's tls block.
type TLS struct {
	CAFile, CertFile, KeyFile string
	// Pool holds the CA, for Go clients.
	Pool *x509.CertPool

	t      testing.TB
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	serial int64
}

// NewTLS makes a CA and a first server certificate, common name
// "sluice-test-1".
func NewTLS(t testing.TB) *TLS {
	t.Helper()
	dir := t.TempDir()
	c := &TLS{
		CAFile:   filepath.Join(dir, "ca.pem"),
		CertFile: filepath.Join(dir, "cert.pem"),
		KeyFile:  filepath.Join(dir, "key.pem"),
		Pool:     x509.NewCertPool(),
		t:        t,
		serial:   1,
	}
	var err error
	if c.caKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "Sluice test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &c.caKey.PublicKey, c.caKey)
	if err != nil {
		t.Fatal(err)
	}
	if c.ca, err = x509.ParseCertificate(der); err != nil {
		t.Fatal(err)
	}
	c.Pool.AddCert(c.ca)
	writePEM(t, c.CAFile, "CERTIFICATE", der)
	c.Issue("sluice-test-1")
	return c
}

// Issue signs a new server certificate with common name cn and the next
// serial number, and writes it and its new key over CertFile and KeyFile
// (the certificate first, as a renewal would), returning it.
func (c *TLS) Issue(cn string) *x509.Certificate {
	c.t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		c.t.Fatal(err)
	}
	c.serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(c.serial),
		Subject:      pkix.Name{CommonName: cn},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1"), net.IPv6loopback},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.ca, &key.PublicKey, c.caKey)
	if err != nil {
		c.t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		c.t.Fatal(err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		c.t.Fatal(err)
	}
	writePEM(c.t, c.CertFile, "CERTIFICATE", der)
	writePEM(c.t, c.KeyFile, "PRIVATE KEY", kb)
	return cert
}

// Origin returns the pipeline.hcl of an upstream for TLS tests: RTMP and
// HTTP listeners and their TLS twins (ingest.rtmp.tls, server.https)
// presenting the test certificate, all on 127.0.0.1:0, and one "live/*"
// pipeline with HTTP-FLV out. server goes into the server block as it is
// (node = "...", or nothing).
func (c *TLS) Origin(server string) string {
	return fmt.Sprintf(`
server {
  %s
  http  = "127.0.0.1:0"
  https = "127.0.0.1:0"
  tls {
    cert_file = %q
    key_file  = %q
  }
  api = ""
}
ingest "rtmp" {
  listen = "127.0.0.1:0"
}
ingest "rtmp" "tls" {
  listen = "127.0.0.1:0"
  tls {
    cert_file = %[2]q
    key_file  = %[3]q
  }
}
pipeline "live" {
  match = "live/*"
  output "http_flv" {}
}
`, server, c.CertFile, c.KeyFile)
}

// ClientConfig returns a client configuration that trusts only the test
// CA.
func (c *TLS) ClientConfig() *tls.Config {
	return &tls.Config{RootCAs: c.Pool, MinVersion: tls.VersionTLS12}
}

// PeerCertificate connects to addr with TLS, verifying it against the
// test CA, and returns the leaf certificate the server presented. It fails
// the test if the handshake fails.
func (c *TLS) PeerCertificate(addr string) *x509.Certificate {
	c.t.Helper()
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: c.ClientConfig()}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		c.t.Fatalf("TLS dial %s: %v", addr, err)
	}
	defer nc.Close()
	return nc.(*tls.Conn).ConnectionState().PeerCertificates[0]
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}
