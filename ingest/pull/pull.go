// Package pull keeps one remote stream published locally: the ingest
// kinds "flv_pull" (HTTP-FLV) and "rtmp_pull" play a stream from another
// server with the protocol clients of ingest/flvhttp and ingest/rtmp,
// publish it through the Gate like any publisher, and reconnect with
// backoff when the upstream drops.
package pull

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/sluice-media/sluice/ingest/flvhttp"
	"github.com/sluice-media/sluice/ingest/rtmp"
	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/config"
)

// Config is the body of an `ingest "rtmp_pull" "NAME"` block.
type Config struct {
	// URL is the stream to pull, "rtmp://upstream:1935/live/x?token=t".
	URL string `hcl:"url"`
	// Stream is the local stream path the pull publishes, "live/x".
	Stream string `hcl:"stream"`
	// IdleTimeout drops the connection when the upstream sends nothing for
	// this long, the connection setup included. "10s" by default.
	IdleTimeout string `hcl:"idle_timeout,optional"`
	// RetryMin and RetryMax bound the exponential backoff between
	// attempts; "1s" and "30s" by default.
	RetryMin string `hcl:"retry_min,optional"`
	RetryMax string `hcl:"retry_max,optional"`
	// TLSCAFile is a PEM file of the CAs to trust for an rtmps:// URL
	// instead of the system's roots: a private CA.
	TLSCAFile string `hcl:"tls_ca_file,optional"`

	s settings
}

// FLVConfig is the body of an `ingest "flv_pull" "NAME"` block: the
// fields of Config, with an http:// or https:// URL, and max_tag_size.
// (gohcl does not decode embedded structs, hence the repetition.)
type FLVConfig struct {
	// URL is the HTTP-FLV URL to pull, "http://upstream:8080/live/x.flv".
	URL string `hcl:"url"`
	// Stream is the local stream path the pull publishes, "live/x".
	Stream string `hcl:"stream"`
	// IdleTimeout drops the connection when the upstream sends nothing for
	// this long, the response headers included. "10s" by default.
	IdleTimeout string `hcl:"idle_timeout,optional"`
	// RetryMin and RetryMax bound the exponential backoff between
	// attempts; "1s" and "30s" by default.
	RetryMin string `hcl:"retry_min,optional"`
	RetryMax string `hcl:"retry_max,optional"`
	// MaxTagSize is the largest FLV tag accepted, in bytes; 8 MiB by
	// default.
	MaxTagSize int `hcl:"max_tag_size,optional"`
	// TLSCAFile is a PEM file of the CAs to trust for an https:// URL
	// instead of the system's roots: a private CA.
	TLSCAFile string `hcl:"tls_ca_file,optional"`

	s settings
}

// settings are the validated fields both kinds share.
type settings struct {
	url                      *url.URL
	stream                   string
	idle, retryMin, retryMax time.Duration
}

// Defaults fills the defaults before decoding.
func (c *Config) Defaults() {
	c.IdleTimeout, c.RetryMin, c.RetryMax = "10s", "1s", "30s"
}

// Validate checks and converts the fields.
func (c *Config) Validate() error {
	var err error
	c.s, err = parse(c.URL, c.Stream, c.IdleTimeout, c.RetryMin, c.RetryMax, "rtmp", "rtmps")
	if err != nil {
		return err
	}
	if err := checkCAFile(c.TLSCAFile, c.s.url, "rtmps"); err != nil {
		return err
	}
	if u := c.s.url; u.Fragment == "" && strings.Count(strings.Trim(u.Path, "/"), "/") < 1 {
		return &config.FieldError{Attr: "url", Err: fmt.Errorf("%q names no stream; use rtmp://HOST:PORT/APP/NAME", c.URL)}
	}
	return nil
}

// Defaults fills the defaults before decoding.
func (c *FLVConfig) Defaults() {
	c.IdleTimeout, c.RetryMin, c.RetryMax = "10s", "1s", "30s"
	c.MaxTagSize = flvhttp.DefaultMaxTagSize
}

// maxFLVTagSize is what the 24-bit size field of an FLV tag header can
// express (FLV v10.1 §E.4.1).
const maxFLVTagSize = 1<<24 - 1

// Validate checks and converts the fields.
func (c *FLVConfig) Validate() error {
	var err error
	c.s, err = parse(c.URL, c.Stream, c.IdleTimeout, c.RetryMin, c.RetryMax, "http", "https")
	if err != nil {
		return err
	}
	if err := checkCAFile(c.TLSCAFile, c.s.url, "https"); err != nil {
		return err
	}
	if c.MaxTagSize < 1024 || c.MaxTagSize > maxFLVTagSize {
		return &config.FieldError{Attr: "max_tag_size", Err: fmt.Errorf("%d is out of range; use 1024 to %d bytes (the FLV tag size field is 24 bits)", c.MaxTagSize, maxFLVTagSize)}
	}
	return nil
}

// checkCAFile refuses a tls_ca_file that the URL would never use: a
// setting that does nothing is a mistake the operator should hear about.
func checkCAFile(caFile string, u *url.URL, tlsScheme string) error {
	if caFile != "" && u.Scheme != tlsScheme {
		return &config.FieldError{Attr: "tls_ca_file", Err: fmt.Errorf("tls_ca_file is for %s:// URLs, and url is %s://", tlsScheme, u.Scheme)}
	}
	return nil
}

func parse(rawURL, stream, idle, retryMin, retryMax string, schemes ...string) (settings, error) {
	var s settings
	u, err := url.Parse(rawURL)
	if err != nil || u.Host == "" || (u.Scheme != schemes[0] && u.Scheme != schemes[1]) {
		return s, &config.FieldError{Attr: "url", Err: fmt.Errorf("%q is not an %s:// or %s:// URL", rawURL, schemes[0], schemes[1])}
	}
	s.url = u
	if err := pipeline.ValidPath(stream); err != nil {
		return s, &config.FieldError{Attr: "stream", Err: err}
	}
	s.stream = stream
	for _, f := range []struct {
		attr, v string
		d       *time.Duration
	}{{"idle_timeout", idle, &s.idle}, {"retry_min", retryMin, &s.retryMin}, {"retry_max", retryMax, &s.retryMax}} {
		d, err := time.ParseDuration(f.v)
		if err != nil || d <= 0 {
			return s, &config.FieldError{Attr: f.attr, Err: fmt.Errorf("%q is not a positive duration such as \"10s\"", f.v)}
		}
		*f.d = d
	}
	if s.retryMax < s.retryMin {
		return s, &config.FieldError{Attr: "retry_max", Err: fmt.Errorf("%s is less than retry_min (%s)", retryMax, retryMin)}
	}
	return s, nil
}

// Register adds the "flv_pull" and "rtmp_pull" ingest kinds.
func Register(k *pipeline.Kinds) {
	pipeline.Add(k, "ingest", "flv_pull", func(c *FLVConfig, env pipeline.Env) (pipeline.Stage, error) {
		tc, err := pipeline.ClientTLS(c.TLSCAFile)
		if err != nil {
			return nil, err
		}
		return newPull("flv_pull", "http-flv-pull", c.s, env, func(log *slog.Logger) pipeline.PullFunc {
			o := flvhttp.ClientOptions{IdleTimeout: c.s.idle, MaxTagSize: c.MaxTagSize, TLS: tc, Log: log}
			return func(ctx context.Context, u *url.URL, open func() (pipeline.Sink, error)) error {
				return flvhttp.Pull(ctx, u, o, open)
			}
		})
	})
	pipeline.Add(k, "ingest", "rtmp_pull", func(c *Config, env pipeline.Env) (pipeline.Stage, error) {
		tc, err := pipeline.ClientTLS(c.TLSCAFile)
		if err != nil {
			return nil, err
		}
		return newPull("rtmp_pull", "rtmp-pull", c.s, env, func(log *slog.Logger) pipeline.PullFunc {
			o := rtmp.ClientOptions{IdleTimeout: c.s.idle, TLS: tc, Log: log}
			return func(ctx context.Context, u *url.URL, open func() (pipeline.Sink, error)) error {
				return rtmp.Pull(ctx, u, o, open)
			}
		})
	})
}

// goodSession is how long a session must have delivered the stream for
// the backoff to start again from retry_min.
const goodSession = time.Minute

// Pull keeps one remote stream published locally, reconnecting with
// exponential backoff. While it reconnects within the pipeline's
// publisher_grace, the stream's players stay attached and its timeline
// continues (the hub rebases each session's timestamps).
type Pull struct {
	kind, proto string
	s           settings
	env         pipeline.Env
	log         *slog.Logger
	pull        pipeline.PullFunc

	connects   *pipeline.CounterVec
	reconnects *pipeline.CounterVec
	closed     *pipeline.CounterVec
}

func newPull(kind, proto string, s settings, env pipeline.Env, client func(*slog.Logger) pipeline.PullFunc) (*Pull, error) {
	if _, ok := env.Resolve(s.stream); !ok {
		return nil, fmt.Errorf("no pipeline matches stream %q; add a pipeline whose match covers it", s.stream)
	}
	log := env.Log.With("stream", s.stream, "url", pipeline.LogURL(s.url), "proto", proto)
	m := env.Metrics
	return &Pull{
		kind:       kind,
		proto:      proto,
		s:          s,
		env:        env,
		log:        log,
		pull:       client(log),
		connects:   m.Counter("sluice_pull_connects_total", "Pull sessions that started delivering a stream, by kind and stream.", "kind", "stream"),
		reconnects: m.Counter("sluice_pull_reconnects_total", "Pull attempts after a drop or a failure, by kind and stream.", "kind", "stream"),
		closed:     m.Counter("sluice_pull_closed_total", "Pull attempts ended, by kind, stream and cause.", "kind", "stream", "cause"),
	}, nil
}

// Run pulls until ctx ends; cancelling ctx aborts the attempt in flight
// and the wait between attempts.
func (p *Pull) Run(ctx context.Context) error {
	backoff := pipeline.Backoff{Min: p.s.retryMin, Max: p.s.retryMax, Good: goodSession}
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			// With, not a kept *Counter: the hub forgets a stream's
			// series when the stream ends, and the pull outlives it.
			p.reconnects.With(p.kind, p.s.stream).Inc()
		}
		delivered, cause, err := p.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		p.closed.With(p.kind, p.s.stream, cause).Inc()
		wait := backoff.Next(delivered)
		p.log.Warn("pull dropped", "cause", cause, "err", err, "retry_in", wait.Round(time.Millisecond))
		if !pipeline.Sleep(ctx, wait, nil) {
			return nil
		}
	}
}

// session runs one attempt: the client connects and, once the upstream
// delivers, publishes through the Gate until it returns. It reports how
// long the stream was delivered, and the cause and error for the log.
func (p *Pull) session(ctx context.Context) (time.Duration, string, error) {
	var s *sink
	err := p.pull(ctx, p.s.url, func() (pipeline.Sink, error) {
		pub, err := p.env.Gate.Publish(ctx, pipeline.Request{
			Path:   p.s.stream,
			URL:    p.s.url.String(),
			Client: pipeline.ClientInfo{Proto: p.proto, Remote: p.s.url.Host, Query: p.s.url.RawQuery},
		})
		if err != nil {
			return nil, err
		}
		s = &sink{Publisher: pub, start: time.Now()}
		p.connects.With(p.kind, p.s.stream).Inc()
		p.log.Info("pull connected")
		return s, nil
	})
	cause := causeOf(ctx, err, s != nil)
	if s == nil {
		return 0, cause, err
	}
	s.Finish(cause)
	d := time.Since(s.start)
	p.log.Info("pull session ended", "cause", cause, "duration", d.Round(time.Millisecond), "bytes", s.bytes, "units", s.units)
	return d, cause, err
}

// causeOf names why an attempt ended, for the log, sluice_pull_closed_total
// and the publish session's close.
func causeOf(ctx context.Context, err error, delivered bool) string {
	if ctx.Err() != nil {
		return "shutdown"
	}
	return pipeline.PullCause(err, delivered)
}

// sink is the publisher of one session, counting what it is given for the
// session's log line.
type sink struct {
	*pipeline.Publisher
	start time.Time
	bytes int64
	units uint64
}

func (s *sink) Write(au *pipeline.AccessUnit) error {
	s.units++
	return s.Publisher.Write(au)
}

// CountBytes counts n received bytes for the log and the Gate's metrics.
func (s *sink) CountBytes(n int64) {
	s.bytes += n
	s.Publisher.CountBytes(n)
}

var (
	_ pipeline.Stage = (*Pull)(nil)
	_ pipeline.Sink  = (*sink)(nil)
)
