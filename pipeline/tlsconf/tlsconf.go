// Package tlsconf is the TLS of Sluice's listeners and clients: a server
// certificate read from PEM files and read again when they change on disk,
// TLS 1.2 as the oldest version spoken, and client configurations that
// trust a private certificate authority.
package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// MinVersion is the oldest TLS version Sluice accepts, as a server and as a
// client. TLS 1.0 and 1.1 are deprecated (RFC 8996); a client that offers
// nothing newer fails its handshake.
const MinVersion = tls.VersionTLS12

// DefaultCheckInterval is how often, at most, a Certs looks at its files
// again: a handshake stats them when the last look is older than this, so
// that a busy listener costs two stat calls a second, and an idle one none.
const DefaultCheckInterval = time.Second

// FileError is a file of a TLS configuration that cannot be used: missing,
// unreadable, not PEM, or a key that does not match its certificate.
type FileError struct {
	// Path is the file at fault, as configured.
	Path string
	// Key is set when the private key file is at fault, a key that does
	// not match the certificate included; otherwise it is the certificate
	// file (or, for ClientConfig, the CA file).
	Key bool
	// Err is what is wrong with it.
	Err error
}

func (e *FileError) Error() string {
	if pe := (*fs.PathError)(nil); errors.As(e.Err, &pe) && pe.Path == e.Path {
		return e.Err.Error() // "open PATH: no such file or directory"
	}
	return e.Path + ": " + e.Err.Error()
}
func (e *FileError) Unwrap() error { return e.Err }

// Options configure Load.
type Options struct {
	// Log receives the lines of reloads: Info for a new certificate, one
	// Warn for a pair that cannot be used (logged once, not at every
	// handshake). nil discards them.
	Log *slog.Logger
	// Reloaded, when set, is told of every attempt to load files that
	// changed: the new leaf certificate, or the error while the previous
	// certificate stays in use. It is called from a handshake's goroutine,
	// one call at a time, and must not block.
	Reloaded func(leaf *x509.Certificate, err error)
}

// Certs is the certificate of a TLS listener, read from a certificate file
// (the chain, leaf first) and a key file, both PEM. It follows the files:
// when a handshake finds that either changed on disk (modification time or
// size), the pair is read again and, if it loads, used from that handshake
// on; if it does not (a half-written pair, a key that does not match), the
// previous certificate stays in use and the failure is logged once. So an
// operator, or a certificate manager, renews a certificate by writing the
// files: no restart and no reload is needed, and connections already open
// keep the certificate they started with.
//
// It is safe for concurrent use. It starts no goroutine: the files are
// looked at from handshakes, at most once per DefaultCheckInterval.
type Certs struct {
	certFile, keyFile string
	opts              Options
	interval          time.Duration

	cur  atomic.Pointer[tls.Certificate]
	mu   sync.Mutex // held by the one handshake that checks the files
	last time.Time  // when the files were last looked at
	seen stamps     // the files as last loaded or tried
}

// stamps identify the versions of the two files: a writer changes the
// modification time (nanoseconds on Linux file systems) or the size. A
// file that cannot be looked at (a renewal that removes it, then writes
// it) is a version of its own, told by the error.
type stamps struct {
	certMod, keyMod   int64
	certSize, keySize int64
	err               string
}

// Load reads the certificate and key at certFile and keyFile. An error is
// a *FileError that names the file at fault. A certificate that has
// expired, or is not valid yet, loads (clients will refuse it, and the
// files may be about to be replaced) with a warning in the log.
func Load(certFile, keyFile string, o Options) (*Certs, error) {
	c := &Certs{certFile: certFile, keyFile: keyFile, opts: o, interval: DefaultCheckInterval}
	if c.opts.Log == nil {
		c.opts.Log = slog.New(slog.DiscardHandler)
	}
	st := c.stat()
	cert, err := loadPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	c.seen, c.last = st, time.Now()
	c.cur.Store(cert)
	c.warnValidity(cert.Leaf)
	return c, nil
}

// GetCertificate returns the certificate to present; it is the
// tls.Config.GetCertificate of the listener. When the last look at the
// files is older than the check interval it looks again and loads a
// changed pair first. A handshake never waits for another one's look: it
// presents the certificate in use.
func (c *Certs) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.check(time.Now())
	return c.cur.Load(), nil
}

// Leaf returns the leaf certificate in use.
func (c *Certs) Leaf() *x509.Certificate { return c.cur.Load().Leaf }

// ServerConfig returns the configuration of a listener that presents c:
// TLS 1.2 or newer, and the application protocols to offer in ALPN
// (RFC 7301), most preferred first ("h2", "http/1.1" for HTTP; none for
// RTMPS, which has no ALPN name).
func (c *Certs) ServerConfig(nextProtos ...string) *tls.Config {
	return &tls.Config{
		MinVersion:     MinVersion,
		GetCertificate: c.GetCertificate,
		NextProtos:     nextProtos,
	}
}

// check loads the files again if they changed since the last look and the
// last look is older than the interval.
func (c *Certs) check(now time.Time) {
	if !c.mu.TryLock() {
		return // another handshake is looking
	}
	defer c.mu.Unlock()
	if now.Sub(c.last) < c.interval {
		return
	}
	c.last = now
	st := c.stat()
	if st == c.seen {
		return
	}
	c.seen = st
	var cert *tls.Certificate
	var err error
	if st.err != "" {
		// A missing file: logged once, and the pair tried again once it
		// is back.
		err = errors.New(st.err)
	} else {
		cert, err = loadPair(c.certFile, c.keyFile)
	}
	if err != nil {
		c.opts.Log.Warn("TLS certificate files changed but cannot be loaded; still using the previous certificate",
			"cert_file", c.certFile, "key_file", c.keyFile, "err", err)
		if c.opts.Reloaded != nil {
			c.opts.Reloaded(nil, err)
		}
		return
	}
	c.cur.Store(cert)
	c.opts.Log.Info("TLS certificate reloaded", "cert_file", c.certFile, "key_file", c.keyFile,
		"subject", cert.Leaf.Subject.String(), "serial", cert.Leaf.SerialNumber.String(), "not_after", cert.Leaf.NotAfter)
	c.warnValidity(cert.Leaf)
	if c.opts.Reloaded != nil {
		c.opts.Reloaded(cert.Leaf, nil)
	}
}

// stat returns the stamps of both files.
func (c *Certs) stat() stamps {
	var st stamps
	ci, err := os.Stat(c.certFile)
	if err != nil {
		st.err = err.Error()
		return st
	}
	st.certMod, st.certSize = ci.ModTime().UnixNano(), ci.Size()
	ki, err := os.Stat(c.keyFile)
	if err != nil {
		st.err = err.Error()
		return st
	}
	st.keyMod, st.keySize = ki.ModTime().UnixNano(), ki.Size()
	return st
}

func (c *Certs) warnValidity(leaf *x509.Certificate) {
	now := time.Now()
	switch {
	case now.After(leaf.NotAfter):
		c.opts.Log.Warn("TLS certificate has expired; clients will refuse it", "cert_file", c.certFile, "not_after", leaf.NotAfter)
	case now.Before(leaf.NotBefore):
		c.opts.Log.Warn("TLS certificate is not valid yet; clients will refuse it", "cert_file", c.certFile, "not_before", leaf.NotBefore)
	}
}

// loadPair reads and parses the pair, telling which file is at fault.
func loadPair(certFile, keyFile string) (*tls.Certificate, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, &FileError{Path: certFile, Err: err}
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, &FileError{Path: keyFile, Key: true, Err: err}
	}
	// The certificate first on its own, so that a bad certificate file is
	// not blamed on the key.
	if _, err := firstCertificate(certPEM); err != nil {
		return nil, &FileError{Path: certFile, Err: err}
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, &FileError{Path: keyFile, Key: true, Err: err}
	}
	return &cert, nil
}

// firstCertificate parses the first CERTIFICATE block of a PEM file.
func firstCertificate(b []byte) (*x509.Certificate, error) {
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			return nil, errors.New("no PEM CERTIFICATE block; want the certificate chain in PEM, leaf first")
		}
		if block.Type == "CERTIFICATE" {
			cert, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("the first certificate: %w", err)
			}
			return cert, nil
		}
	}
}

// ClientConfig returns the configuration of a client that connects to
// TLS upstreams (rtmps://, https://): TLS 1.2 or newer and, with caFile,
// trusting the certificate authorities in that PEM file instead of the
// system's roots, for a cluster with a private CA. With caFile "" it
// trusts the system's roots. The server name is left for the client to
// take from each URL.
func ClientConfig(caFile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: MinVersion}
	if caFile == "" {
		return cfg, nil
	}
	b, err := os.ReadFile(caFile)
	if err != nil {
		return nil, &FileError{Path: caFile, Err: err}
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, &FileError{Path: caFile, Err: errors.New("no PEM CERTIFICATE block; want the CA certificates in PEM")}
	}
	cfg.RootCAs = pool
	return cfg, nil
}
