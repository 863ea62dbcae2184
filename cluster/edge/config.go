package edge

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/sluice-media/sluice/pipeline/config"
)

// Config is the body of an `edge "pull"` block inside a pipeline. The
// package documentation describes each attribute.
type Config struct {
	// Upstreams are the base URLs to pull from, "rtmp://host:port" or
	// "http://host:port", with an optional path prefix, in the order to
	// try.
	Upstreams []string `hcl:"upstreams,optional"`
	// Balance is "ordered" (primary first) or "hash" (rendezvous hashing
	// of the stream path over the upstreams).
	Balance string `hcl:"balance,optional"`
	// Linger keeps a pull this long after its last reader left.
	Linger string `hcl:"linger,optional"`
	// IdleTimeout is the watchdog: an upstream silent this long is dead.
	IdleTimeout string `hcl:"idle_timeout,optional"`
	// HealthInterval is the period of the upstreams' health checks.
	HealthInterval string `hcl:"health_interval,optional"`
	// RetryMin and RetryMax bound the backoff of a stream whose every
	// upstream failed while players wait.
	RetryMin string `hcl:"retry_min,optional"`
	RetryMax string `hcl:"retry_max,optional"`
	// MaxHops is the longest chain of edges a request may have crossed.
	MaxHops int `hcl:"max_hops,optional"`
	// Publish is "forward" or "local": what happens to a publisher that
	// connects to this edge.
	Publish string `hcl:"publish,optional"`
	// Routes are the upstream hosts a client may name itself, FMS style;
	// empty turns explicit routing off.
	Routes []string `hcl:"routes,optional"`
	// Directory names a top-level directory block to ask first.
	Directory string `hcl:"directory,optional"`
	// Redirect sends the players of a stream the directory places on
	// another node to that owner (an RTMP redirect status, an HTTP 302)
	// instead of pulling it; it needs Directory.
	Redirect bool `hcl:"redirect,optional"`
	// HTTP2 carries the pulls from http:// upstreams over cleartext
	// HTTP/2, one connection per origin; false gives each pull an
	// HTTP/1.1 connection of its own, for upstreams that speak only that.
	HTTP2 bool `hcl:"http2,optional"`
	// TLSCAFile is a PEM file of the CAs to trust for rtmps:// and
	// https:// upstreams (those listed and those a directory names)
	// instead of the system's roots: a cluster's private CA.
	TLSCAFile string `hcl:"tls_ca_file,optional"`

	s settings
}

// Balance policies.
const (
	BalanceOrdered = "ordered"
	BalanceHash    = "hash"
)

// Publish policies.
const (
	PublishForward = "forward"
	PublishLocal   = "local"
)

// Defaults of the block's attributes.
const (
	DefaultLinger         = 10 * time.Second
	DefaultIdleTimeout    = 3 * time.Second
	DefaultHealthInterval = 2 * time.Second
	DefaultRetryMin       = 500 * time.Millisecond
	DefaultRetryMax       = 5 * time.Second
	DefaultMaxHops        = 4
)

// maxHopsLimit bounds max_hops: a longer chain is a loop by another name.
const maxHopsLimit = 32

// settings are the validated, converted attributes.
type settings struct {
	upstreams            []*upstream
	hash                 bool
	linger, idle, health time.Duration
	retryMin, retryMax   time.Duration
	maxHops              int
	forward              bool
	routes               map[string]bool // allowed host:port and host
	directory            string
	redirect             bool
	http2                bool
}

// Defaults fills the defaults before decoding. publish is left empty: it
// means "forward" when there is an rtmp:// upstream to forward to, and
// "local" otherwise (a directory-only block on an origin).
func (c *Config) Defaults() {
	c.Balance = BalanceOrdered
	c.Linger = DefaultLinger.String()
	c.IdleTimeout = DefaultIdleTimeout.String()
	c.HealthInterval = DefaultHealthInterval.String()
	c.RetryMin = DefaultRetryMin.String()
	c.RetryMax = DefaultRetryMax.String()
	c.MaxHops = DefaultMaxHops
	c.HTTP2 = true
}

// Validate checks and converts the attributes; a *config.FieldError
// names the attribute at fault.
func (c *Config) Validate() error {
	s := settings{directory: c.Directory, redirect: c.Redirect, http2: c.HTTP2}
	seen := map[string]bool{}
	for i, raw := range c.Upstreams {
		u, err := parseUpstream(raw)
		if err != nil {
			return &config.FieldError{Attr: "upstreams", Err: fmt.Errorf("upstreams[%d]: %w", i, err)}
		}
		if seen[u.base.String()] {
			return &config.FieldError{Attr: "upstreams", Err: fmt.Errorf("upstreams[%d]: %q is listed twice", i, raw)}
		}
		seen[u.base.String()] = true
		u.index = i
		s.upstreams = append(s.upstreams, u)
	}
	if len(s.upstreams) == 0 && c.Directory == "" {
		return &config.FieldError{Attr: "upstreams", Err: errors.New(`an edge needs somewhere to pull from: list upstreams ("rtmp://host:port" or "http://host:port"), or name a directory`)}
	}
	switch c.Balance {
	case BalanceOrdered:
	case BalanceHash:
		s.hash = true
	default:
		return &config.FieldError{Attr: "balance", Err: fmt.Errorf("%q is not a balance policy; use %q (primary first) or %q (by stream path)", c.Balance, BalanceOrdered, BalanceHash)}
	}
	for _, f := range []struct {
		attr, v string
		d       *time.Duration
		zero    bool
	}{
		{"linger", c.Linger, &s.linger, true},
		{"idle_timeout", c.IdleTimeout, &s.idle, false},
		{"health_interval", c.HealthInterval, &s.health, false},
		{"retry_min", c.RetryMin, &s.retryMin, false},
		{"retry_max", c.RetryMax, &s.retryMax, false},
	} {
		d, err := time.ParseDuration(f.v)
		if err != nil || d < 0 || d == 0 && !f.zero {
			want := "a positive duration"
			if f.zero {
				want = "a duration of 0 or more"
			}
			return &config.FieldError{Attr: f.attr, Err: fmt.Errorf("%q is not %s, such as \"3s\"", f.v, want)}
		}
		*f.d = d
	}
	if s.retryMax < s.retryMin {
		return &config.FieldError{Attr: "retry_max", Err: fmt.Errorf("%s is less than retry_min (%s)", c.RetryMax, c.RetryMin)}
	}
	if c.MaxHops < 1 || c.MaxHops > maxHopsLimit {
		return &config.FieldError{Attr: "max_hops", Err: fmt.Errorf("%d is out of range; use 1 to %d", c.MaxHops, maxHopsLimit)}
	}
	s.maxHops = c.MaxHops
	pushable := false
	for _, u := range s.upstreams {
		pushable = pushable || u.rtmp()
	}
	switch c.Publish {
	case "":
		s.forward = pushable
	case PublishForward:
		if !pushable {
			return &config.FieldError{Attr: "publish", Err: errors.New(`"forward" needs an rtmp:// upstream to push to (HTTP-FLV has no publish); add one, or use publish = "local"`)}
		}
		s.forward = true
	case PublishLocal:
	default:
		return &config.FieldError{Attr: "publish", Err: fmt.Errorf("%q is not a publish policy; use %q or %q", c.Publish, PublishForward, PublishLocal)}
	}
	if len(c.Routes) > 0 {
		s.routes = map[string]bool{}
	}
	for i, r := range c.Routes {
		if r == "" || strings.Contains(r, "/") || strings.ContainsAny(r, " ?#@") {
			return &config.FieldError{Attr: "routes", Err: fmt.Errorf("routes[%d]: %q is not a host or host:port (no scheme, no path)", i, r)}
		}
		s.routes[strings.ToLower(r)] = true
	}
	if c.Directory != "" && !validAddress(c.Directory) {
		return &config.FieldError{Attr: "directory", Err: fmt.Errorf("%q is not the name of a directory block", c.Directory)}
	}
	if c.TLSCAFile != "" && c.Directory == "" && !slices.ContainsFunc(s.upstreams, (*upstream).tls) {
		return &config.FieldError{Attr: "tls_ca_file", Err: errors.New("tls_ca_file is for rtmps:// and https:// upstreams, and none is listed (nor a directory that could name one)")}
	}
	if c.Redirect && c.Directory == "" {
		return &config.FieldError{Attr: "redirect", Err: errors.New(`redirect sends players to the node a directory names; set directory = "NAME" too, or remove redirect`)}
	}
	c.s = s
	return nil
}

// validAddress reports whether s can be the rest of a block address:
// labels of letters, digits, _ and -, joined by dots.
func validAddress(s string) bool {
	for _, part := range strings.Split(s, ".") {
		if part == "" || strings.ContainsFunc(part, func(r rune) bool {
			return !(r == '_' || r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z')
		}) {
			return false
		}
	}
	return true
}

// parseUpstream checks one base URL: rtmp, rtmps, http or https, a host,
// an optional path prefix, and nothing else (a query belongs to the
// client's request, not to the edge's configuration).
func parseUpstream(raw string) (*upstream, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%q is not a URL: %w", raw, err)
	}
	switch u.Scheme {
	case "rtmp", "rtmps", "http", "https":
	default:
		return nil, fmt.Errorf(`%q: use a base URL such as "rtmp://host:1935" or "http://host:8080"`, raw)
	}
	if u.Host == "" || u.Opaque != "" {
		return nil, fmt.Errorf("%q names no host", raw)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("%q: a base URL has no credentials, query or fragment; clients' queries are passed on", raw)
	}
	if _, _, err := net.SplitHostPort(hostPort(u)); err != nil {
		return nil, fmt.Errorf("%q: %w", raw, err)
	}
	base := &url.URL{Scheme: u.Scheme, Host: u.Host, Path: strings.TrimSuffix(u.Path, "/")}
	return &upstream{base: base, key: hostPort(u), label: hostPort(u)}, nil
}

// hostPort is u's host:port, with the scheme's default port when u has
// none: RTMP's 1935, HTTP's 80, HTTPS's 443.
func hostPort(u *url.URL) string {
	if u.Port() != "" {
		return u.Host
	}
	port := "1935"
	switch u.Scheme {
	case "http":
		port = "80"
	case "https", "rtmps":
		port = "443"
	}
	return net.JoinHostPort(u.Hostname(), port)
}
