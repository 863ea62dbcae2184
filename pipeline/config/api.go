package config

import (
	"net"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// apiExposure refuses an API listener that anyone beyond this host can
// reach while no api_token protects it: the API kicks clients, stops
// streams and reloads the configuration.
func (d *decoder) apiExposure(b *hclsyntax.Block, a map[string]*hclsyntax.Attribute) {
	s := &d.f.Server
	if s.API == "" || s.APIToken != "" || Loopback(s.API) {
		return
	}
	rng := b.DefRange()
	if attr := a["api"]; attr != nil {
		rng = attr.Expr.Range()
	}
	d.diags = append(d.diags, &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  "API reachable beyond this host without a token",
		Detail: "api = \"" + s.API + "\" listens beyond loopback, and the API can kick clients, stop streams and reload " +
			"the configuration. Set api_token (api_token = env(\"SLUICE_API_TOKEN\")) so that those requests need " +
			"\"Authorization: Bearer TOKEN\", or listen on loopback: api = \"127.0.0.1:9997\".",
		Subject: rng.Ptr(),
	})
}

// Loopback reports whether addr ("host:port") can only be reached from
// this host: its host is "localhost" or a loopback IP (127.0.0.0/8, ::1).
// An empty host (":9997") listens on every interface, and a name other
// than localhost may resolve to anything, so neither is loopback.
func Loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	host, _, _ = strings.Cut(host, "%") // an IPv6 zone
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
