package config_test

import (
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"

	"github.com/sluice-media/sluice/pipeline/config"
)

// TestAttrRange: a *FieldError's Attr finds its attribute through nested
// blocks, so that a kind can point at tls.cert_file.
func TestAttrRange(t *testing.T) {
	src := `listen = ":1936"
tls {
  cert_file = "cert.pem"
  key_file  = "key.pem"
}
`
	f, diags := hclsyntax.ParseConfig([]byte(src), "t.hcl", hcl.InitialPos)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	for _, tc := range []struct {
		attr      string
		line, col int // 0: not found
	}{
		{"listen", 1, 10},
		{"tls.cert_file", 3, 15},
		{"tls.key_file", 4, 15},
		{"tls", 0, 0},
		{"tls.ca_file", 0, 0},
		{"other.cert_file", 0, 0},
		{"", 0, 0},
	} {
		r, ok := config.AttrRange(f.Body, tc.attr)
		if ok != (tc.line > 0) || ok && (r.Start.Line != tc.line || r.Start.Column != tc.col) {
			t.Errorf("AttrRange(%q) = %v, %v; want line %d, column %d", tc.attr, r, ok, tc.line, tc.col)
		}
	}
}

// TestServerTLS: the server block's https, tls and api_tls decode, with
// where the files are named, for the graph's diagnostics.
func TestServerTLS(t *testing.T) {
	f, diags := config.Parse("t.hcl", []byte(`server {
  https = ":8443"
  tls {
    cert_file = "cert.pem"
    key_file  = "key.pem"
  }
  api_tls {
    cert_file = "api-cert.pem"
    key_file  = "api-key.pem"
  }
}
`), config.Options{})
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	s := f.Server
	if s.HTTPS != ":8443" || s.TLS == nil || s.APITLS == nil {
		t.Fatalf("server %+v", s)
	}
	for _, c := range []struct {
		got, want string
		rng       hcl.Range
		line      int
	}{
		{s.TLS.CertFile, "cert.pem", s.TLS.CertRange, 4},
		{s.TLS.KeyFile, "key.pem", s.TLS.KeyRange, 5},
		{s.APITLS.CertFile, "api-cert.pem", s.APITLS.CertRange, 8},
		{s.APITLS.KeyFile, "api-key.pem", s.APITLS.KeyRange, 9},
	} {
		if c.got != c.want || c.rng.Start.Line != c.line {
			t.Errorf("%q at line %d, want %q at line %d", c.got, c.rng.Start.Line, c.want, c.line)
		}
	}
	if f.Server.HTTP != config.DefaultHTTP {
		t.Errorf("http = %q: https leaves it at its default", f.Server.HTTP)
	}
}
