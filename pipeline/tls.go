package pipeline

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"

	"github.com/hashicorp/hcl/v2"

	"github.com/sluice-media/sluice/pipeline/config"
	"github.com/sluice-media/sluice/pipeline/tlsconf"
)

// ServerTLS loads the certificate of the stage's TLS listener, the files a
// kind's tls block names, and returns the listener's configuration: TLS
// 1.2 or newer, ALPN offering nextProtos, and the certificate read again
// whenever its files change (see tlsconf.Certs). A kind calls it from its
// build function, so that a missing or bad file stops `sluice validate`
// and startup; the error is then a *config.FieldError at the block's
// tls.cert_file or tls.key_file. Reloads are counted in
// sluice_tls_certificate_reloads_total{listener}, where the listener is
// the stage's address.
func (e Env) ServerTLS(t *config.TLS, nextProtos ...string) (*tls.Config, error) {
	c, err := loadCerts(t, e.Address, e.Metrics, e.Log)
	if err != nil {
		attr := "tls.cert_file"
		if fe := (*tlsconf.FileError)(nil); errors.As(err, &fe) && fe.Key {
			attr = "tls.key_file"
		}
		return nil, &config.FieldError{Attr: attr, Err: err}
	}
	return c.ServerConfig(nextProtos...), nil
}

// ClientTLS returns the configuration of a kind's clients of rtmps:// and
// https:// upstreams: TLS 1.2 or newer, trusting the CAs of caFile (a
// block's tls_ca_file) or, with caFile "", the system's roots. A file that
// cannot be used is a *config.FieldError at tls_ca_file. A kind calls it
// from its build function.
func ClientTLS(caFile string) (*tls.Config, error) {
	cfg, err := tlsconf.ClientConfig(caFile)
	if err != nil {
		return nil, &config.FieldError{Attr: "tls_ca_file", Err: err}
	}
	return cfg, nil
}

// serverBlockTLS loads a tls block of the server block (tls for
// server.https, api_tls for server.api) for listener; a file that cannot
// be loaded is a diagnostic at the attribute that names it.
func serverBlockTLS(t *config.TLS, listener string, m *Metrics, log *slog.Logger, nextProtos ...string) (*tls.Config, *hcl.Diagnostic) {
	c, err := loadCerts(t, listener, m, log)
	if err != nil {
		rng := t.CertRange
		if fe := (*tlsconf.FileError)(nil); errors.As(err, &fe) && fe.Key {
			rng = t.KeyRange
		}
		return nil, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Cannot load the TLS certificate",
			Detail:   fmt.Sprintf("%s: %v. cert_file is the certificate chain, leaf first, and key_file its private key, both PEM.", listener, err),
			Subject:  rng.Ptr(),
		}
	}
	return c.ServerConfig(nextProtos...), nil
}

// loadCerts loads t for the listener named listener, with its reloads
// logged to log and counted in m.
func loadCerts(t *config.TLS, listener string, m *Metrics, log *slog.Logger) (*tlsconf.Certs, error) {
	reloads := m.Counter("sluice_tls_certificate_reloads_total",
		"Certificates of TLS listeners read again because their files changed, by listener and result (ok, or failed: the previous certificate stays in use).", "listener", "result")
	expiry := m.Gauge("sluice_tls_certificate_expiry_timestamp_seconds",
		"When the certificate a TLS listener presents expires, in Unix seconds: alert on it falling near time().", "listener").With(listener)
	c, err := tlsconf.Load(t.CertFile, t.KeyFile, tlsconf.Options{
		Log: log,
		Reloaded: func(leaf *x509.Certificate, err error) {
			if err != nil {
				reloads.With(listener, "failed").Inc()
				return
			}
			reloads.With(listener, "ok").Inc()
			expiry.Set(float64(leaf.NotAfter.Unix()))
		},
	})
	if err != nil {
		return nil, err
	}
	expiry.Set(float64(c.Leaf().NotAfter.Unix()))
	return c, nil
}
