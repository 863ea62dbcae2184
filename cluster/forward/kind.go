package forward

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/zclconf/go-cty/cty"

	"github.com/sluice-media/sluice/ingest/rtmp"
	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/config"
)

// Config is the body of a pipeline's forward "rtmp" block.
type Config struct {
	// To lists the targets, each a server and an application,
	// "rtmp://backup:1935/live" (a query string, such as a stream key,
	// is kept). A stream APP/NAME is pushed to TO/NAME.
	To []string `hcl:"to"`
	// Match narrows the pipeline's streams to those whose path matches
	// one of its patterns (path.Match syntax, "live/*"): a string or a
	// list. Every stream of the pipeline when absent.
	Match cty.Value `hcl:"match,optional"`
	// RetryMin and RetryMax bound the exponential backoff between the
	// attempts of one push; "1s" and "30s" by default.
	RetryMin string `hcl:"retry_min,optional"`
	RetryMax string `hcl:"retry_max,optional"`
	// IdleTimeout bounds the connection setup (dial, handshake, connect,
	// publish) and cuts a session whose target accepts nothing for this
	// long; "10s" by default.
	IdleTimeout string `hcl:"idle_timeout,optional"`
	// PassQuery passes the query string of each stream's publisher on to
	// the targets, after their own; false by default, since a
	// publisher's token is for this server.
	PassQuery bool `hcl:"pass_query,optional"`
	// TLSCAFile is a PEM file of the CAs to trust for rtmps:// targets
	// instead of the system's roots: a private CA.
	TLSCAFile string `hcl:"tls_ca_file,optional"`

	to                       []*url.URL
	match                    []string
	retryMin, retryMax, idle time.Duration
}

// Defaults fills the defaults before decoding.
func (c *Config) Defaults() {
	c.RetryMin, c.RetryMax, c.IdleTimeout = "1s", "30s", "10s"
}

// Validate checks and converts the fields.
func (c *Config) Validate() error {
	if len(c.To) == 0 {
		return &config.FieldError{Attr: "to", Err: errors.New("lists no target; use to = [\"rtmp://HOST:1935/APP\"]")}
	}
	seen := map[string]bool{}
	c.to = c.to[:0]
	for _, raw := range c.To {
		u, err := parseTarget(raw)
		if err != nil {
			return &config.FieldError{Attr: "to", Err: err}
		}
		if seen[u.String()] {
			return &config.FieldError{Attr: "to", Err: fmt.Errorf("%q is listed twice", pipeline.LogURL(u))}
		}
		seen[u.String()] = true
		c.to = append(c.to, u)
	}
	if c.TLSCAFile != "" && !slices.ContainsFunc(c.to, func(u *url.URL) bool { return u.Scheme == "rtmps" }) {
		return &config.FieldError{Attr: "tls_ca_file", Err: errors.New("tls_ca_file is for rtmps:// targets, and to lists none")}
	}
	var err error
	if c.match, err = patterns(c.Match); err != nil {
		return &config.FieldError{Attr: "match", Err: err}
	}
	for _, f := range []struct {
		attr, v string
		d       *time.Duration
	}{{"retry_min", c.RetryMin, &c.retryMin}, {"retry_max", c.RetryMax, &c.retryMax}, {"idle_timeout", c.IdleTimeout, &c.idle}} {
		d, err := time.ParseDuration(f.v)
		if err != nil || d <= 0 {
			return &config.FieldError{Attr: f.attr, Err: fmt.Errorf("%q is not a positive duration such as \"10s\"", f.v)}
		}
		*f.d = d
	}
	if c.retryMax < c.retryMin {
		return &config.FieldError{Attr: "retry_max", Err: fmt.Errorf("%s is less than retry_min (%s)", c.RetryMax, c.RetryMin)}
	}
	return nil
}

// parseTarget checks one entry of to: an rtmp:// or rtmps:// URL naming a
// host and an application, and nothing more in its path.
func parseTarget(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Scheme != "rtmp" && u.Scheme != "rtmps") {
		return nil, fmt.Errorf("%q is not an rtmp:// or rtmps:// URL with a host", raw)
	}
	app := strings.Trim(u.Path, "/")
	if app == "" || strings.Contains(app, "/") || u.Fragment != "" {
		// Logged without the query: it may hold a stream key.
		return nil, fmt.Errorf("%q must name an application and no stream, as rtmp://HOST:1935/APP: each stream's name is appended", pipeline.LogURL(u))
	}
	u.Path, u.RawPath = "/"+app, ""
	return u, nil
}

// patterns reads match: absent, a pattern, or a list of patterns.
func patterns(v cty.Value) ([]string, error) {
	if v == cty.NilVal || v.IsNull() {
		return nil, nil
	}
	if !v.IsKnown() {
		return nil, errors.New("must be known when the file is read")
	}
	var list []string
	switch t := v.Type(); {
	case t == cty.String:
		list = []string{v.AsString()}
	case t.IsListType() || t.IsTupleType() || t.IsSetType():
		for it := v.ElementIterator(); it.Next(); {
			_, e := it.Element()
			if e.IsNull() || !e.IsKnown() || e.Type() != cty.String {
				return nil, errors.New("must be a pattern string or a list of them, such as \"live/*\"")
			}
			list = append(list, e.AsString())
		}
	default:
		return nil, errors.New("must be a pattern string or a list of them, such as \"live/*\"")
	}
	for _, pat := range list {
		if _, err := path.Match(pat, ""); err != nil || pat == "" || strings.HasPrefix(pat, "/") {
			return nil, fmt.Errorf("%q is not a stream path pattern; use path.Match syntax without a leading /, such as \"live/*\"", pat)
		}
	}
	return list, nil
}

// Register adds the forward "rtmp" kind, a block inside a pipeline.
func Register(k *pipeline.Kinds) {
	pipeline.Add(k, "pipeline.forward", "rtmp", func(c *Config, env pipeline.Env) (pipeline.Stage, error) {
		return newForward(c, env)
	})
}

// Forward is the stage of a forward "rtmp" block: it pushes every stream
// of its pipeline that its match selects to each of its targets.
type Forward struct {
	env     pipeline.Env
	to      []*url.URL
	match   []string
	options Options
}

func newForward(c *Config, env pipeline.Env) (*Forward, error) {
	if env.Pipeline == nil {
		return nil, errors.New("forward \"rtmp\" belongs inside a pipeline block")
	}
	tc, err := pipeline.ClientTLS(c.TLSCAFile)
	if err != nil {
		return nil, err
	}
	return &Forward{
		env:   env,
		to:    c.to,
		match: c.match,
		options: Options{
			RetryMin:  c.retryMin,
			RetryMax:  c.retryMax,
			PassQuery: c.PassQuery,
			Client:    rtmp.ClientOptions{IdleTimeout: c.idle, WriteTimeout: c.idle, TLS: tc},
		},
	}, nil
}

// Run forwards the pipeline's streams until ctx ends, then returns nil
// once every push has ended.
func (f *Forward) Run(ctx context.Context) error {
	name := f.env.Pipeline.Name
	f.env.Log.Info("forwarding", "to", logURLs(f.to), "match", f.match)
	return Streams(ctx, f.env, func(s *pipeline.Stream) bool {
		return s.Options().Pipeline == name && f.selects(s.Path())
	}, f.targets, f.options)
}

// selects reports whether the block's match covers path.
func (f *Forward) selects(p string) bool {
	if len(f.match) == 0 {
		return true
	}
	for _, pat := range f.match {
		if ok, _ := path.Match(pat, p); ok {
			return true
		}
	}
	return false
}

// targets returns the push of s to each of the block's targets.
func (f *Forward) targets(s *pipeline.Stream) []Target {
	out := make([]Target, 0, len(f.to))
	for _, to := range f.to {
		if u := targetURL(to, s.Path()); u != nil {
			out = append(out, Target{URLs: []*url.URL{u}})
		}
	}
	return out
}

// targetURL returns where the stream at path goes for the target to
// (rtmp://HOST:PORT/APP): the stream APP0/NAME goes to TO/NAME, with TO's
// query string. NAME may have several segments; nil for a path without
// one.
func targetURL(to *url.URL, path string) *url.URL {
	_, name, ok := strings.Cut(path, "/")
	if !ok || name == "" {
		return nil
	}
	u := *to
	u.Path += "/" + name
	return &u
}

func logURLs(us []*url.URL) []string {
	out := make([]string, len(us))
	for i, u := range us {
		out[i] = pipeline.LogURL(u)
	}
	return out
}

var _ pipeline.Stage = (*Forward)(nil)
