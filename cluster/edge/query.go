package edge

import (
	"net/url"
	"strings"
)

// ViaParam is the query parameter that carries the chain of edges a
// request crossed, "sluice_via=e1,e2": each edge appends its node name
// to the chain it received before asking its upstream, so that an edge
// finding its own name (a loop) or too long a chain refuses.
const ViaParam = "sluice_via"

// splitQuery splits a raw query string into its '&'-separated elements,
// kept as they are (undecoded, in order), so that what is passed on to
// an upstream is byte for byte what the client sent: tokens are often
// signatures over the exact text.
func splitQuery(raw string) []string {
	if raw == "" {
		return nil
	}
	return strings.Split(raw, "&")
}

// viaOf returns the chain of nodes in a request's query, oldest first.
func viaOf(raw string) []string {
	var via []string
	for _, el := range splitQuery(raw) {
		k, v, _ := strings.Cut(el, "=")
		if k != ViaParam {
			continue
		}
		if dv, err := url.QueryUnescape(v); err == nil {
			v = dv
		}
		for _, n := range strings.Split(v, ",") {
			if n = strings.TrimSpace(n); n != "" {
				via = append(via, n)
			}
		}
	}
	return via
}

// routeOf finds an explicit route in a query, Flash Media Server style
// (rtmp://edge/app?rtmp://origin/app, percent-encoded or not): the first
// element with no "=" that is an rtmp://, rtmps://, http:// or https://
// URL with a host. It returns the URL and the element, nil if none.
func routeOf(raw string) (*url.URL, string) {
	for _, el := range splitQuery(raw) {
		if strings.Contains(el, "=") {
			continue
		}
		s := el
		if ds, err := url.QueryUnescape(el); err == nil {
			s = ds
		}
		u, err := url.Parse(s)
		if err != nil || u.Host == "" {
			continue
		}
		switch u.Scheme {
		case "rtmp", "rtmps", "http", "https":
			return u, el
		}
	}
	return nil, ""
}

// upstreamQuery is the query an edge sends upstream: the client's, as it
// was, without its via and route elements, then the chain with this
// node appended.
func upstreamQuery(raw, route string, via []string) string {
	var out []string
	for _, el := range splitQuery(raw) {
		k, _, _ := strings.Cut(el, "=")
		if k == ViaParam || route != "" && el == route {
			continue
		}
		out = append(out, el)
	}
	out = append(out, ViaParam+"="+url.QueryEscape(strings.Join(via, ",")))
	return strings.Join(out, "&")
}
