package flvhttp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/config"
	"github.com/sluice-media/sluice/pipeline/media/flv"
	"github.com/sluice-media/sluice/pipeline/media/flvdemux"
)

// PullConfig is the body of an `ingest "flv_pull" "NAME"` block.
type PullConfig struct {
	// URL is the HTTP-FLV URL to pull, "http://upstream:8080/live/x.flv".
	URL string `hcl:"url"`
	// Stream is the local stream path the pull publishes, "live/x".
	Stream string `hcl:"stream"`
	// MaxTagSize is the largest FLV tag accepted, in bytes.
	MaxTagSize int `hcl:"max_tag_size,optional"`
	// IdleTimeout drops the connection when the upstream sends nothing for
	// this long (the response headers included).
	IdleTimeout string `hcl:"idle_timeout,optional"`
	// RetryMin and RetryMax bound the exponential backoff between attempts.
	RetryMin string `hcl:"retry_min,optional"`
	RetryMax string `hcl:"retry_max,optional"`

	url                      *url.URL
	idle, retryMin, retryMax time.Duration
}

// Defaults fills the defaults before decoding.
func (c *PullConfig) Defaults() {
	c.MaxTagSize = DefaultMaxTagSize
	c.IdleTimeout = "10s"
	c.RetryMin = "1s"
	c.RetryMax = "30s"
}

// Validate checks and converts the fields.
func (c *PullConfig) Validate() error {
	u, err := url.Parse(c.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return &config.FieldError{Attr: "url", Err: fmt.Errorf("%q is not an http:// or https:// URL", c.URL)}
	}
	c.url = u
	if err := pipeline.ValidPath(c.Stream); err != nil {
		return &config.FieldError{Attr: "stream", Err: err}
	}
	if err := validTagSize(c.MaxTagSize); err != nil {
		return err
	}
	for _, f := range []struct {
		attr, s string
		d       *time.Duration
	}{{"idle_timeout", c.IdleTimeout, &c.idle}, {"retry_min", c.RetryMin, &c.retryMin}, {"retry_max", c.RetryMax, &c.retryMax}} {
		if *f.d, err = positiveDuration(f.attr, f.s); err != nil {
			return err
		}
	}
	if c.retryMax < c.retryMin {
		return &config.FieldError{Attr: "retry_max", Err: fmt.Errorf("%s is less than retry_min (%s)", c.RetryMax, c.RetryMin)}
	}
	return nil
}

// logURL is the URL without credentials or query string, where tokens
// usually travel: logs are read by more people than the configuration.
func logURL(u *url.URL) string {
	return (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}).String()
}

// goodSession is how long a session must last for the backoff to start
// again from retry_min.
const goodSession = time.Minute

// Pull keeps one remote HTTP-FLV stream published locally, reconnecting with
// exponential backoff. While it reconnects within the pipeline's
// publisher_grace, the stream's players stay attached and its timeline
// continues (the hub rebases each session's timestamps).
type Pull struct {
	cfg    PullConfig
	env    pipeline.Env
	log    *slog.Logger
	client *http.Client

	connects   *pipeline.Counter
	reconnects *pipeline.Counter
	closed     *pipeline.CounterVec
	bytesIn    *pipeline.Counter
}

func newPull(c *PullConfig, env pipeline.Env) (*Pull, error) {
	if _, ok := env.Hub.Resolve(c.Stream); !ok {
		return nil, fmt.Errorf("no pipeline matches stream %q; add a pipeline whose match covers it", c.Stream)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	// One long response per connection: nothing to keep alive, and a new
	// attempt must not reuse a connection to an upstream that went away.
	tr.DisableKeepAlives = true
	m := env.Metrics
	return &Pull{
		cfg:        *c,
		env:        env,
		log:        env.Log.With("stream", c.Stream, "url", logURL(c.url), "proto", "http-flv-pull"),
		client:     &http.Client{Transport: tr},
		connects:   m.Counter("sluice_flvpull_connects_total", "HTTP-FLV pull sessions started, by stream.", "stream").With(c.Stream),
		reconnects: m.Counter("sluice_flvpull_reconnects_total", "HTTP-FLV pull attempts after a drop or a failure, by stream.", "stream").With(c.Stream),
		closed:     m.Counter("sluice_flvpull_closed_total", "HTTP-FLV pull attempts ended, by stream and cause.", "stream", "cause"),
		bytesIn:    m.Counter("sluice_flvpull_received_bytes_total", "Bytes of FLV received by pulls.").With(),
	}, nil
}

// Run pulls until ctx ends; cancelling ctx aborts the request in flight.
func (p *Pull) Run(ctx context.Context) error {
	defer p.client.CloseIdleConnections()
	backoff := p.cfg.retryMin
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			p.reconnects.Inc()
		}
		start := time.Now()
		cause, err := p.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		p.closed.With(p.cfg.Stream, cause).Inc()
		if time.Since(start) >= goodSession {
			backoff = p.cfg.retryMin
		}
		p.log.Warn("pull dropped", "cause", cause, "err", err, "retry_in", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(backoff*2, p.cfg.retryMax)
	}
}

// errUpstreamEnded is a clean end of the upstream's body: it stopped the
// stream or shut down.
var errUpstreamEnded = errors.New("upstream ended the stream")

// session runs one connection: request, publish, copy until the body ends.
// It returns the cause and error for the log.
func (p *Pull) session(ctx context.Context) (string, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// The idle watchdog cancels the request when nothing arrives for the
	// idle timeout: while waiting for the response, then between reads.
	watchdog := time.AfterFunc(p.cfg.idle, func() { cancel(errIdle) })
	defer watchdog.Stop()

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.cfg.URL, nil)
	if err != nil {
		return "protocol_error", err
	}
	req.Header.Set("User-Agent", "Sluice")
	resp, err := p.client.Do(req)
	if err != nil {
		return p.cause(ctx, err), p.err(ctx, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "http_status", fmt.Errorf("upstream answered %s", resp.Status)
	}

	info := pipeline.ClientInfo{Proto: "http-flv-pull", Remote: p.cfg.url.Host, Query: p.cfg.url.RawQuery}
	areq := pipeline.AuthRequest{Action: pipeline.ActionPublish, Proto: "http-flv-pull", Remote: p.cfg.url.Host,
		Path: p.cfg.Stream, Query: p.cfg.url.RawQuery, Node: p.env.Node, URL: p.cfg.url.String()}
	if opts, ok := p.env.Hub.Resolve(p.cfg.Stream); ok {
		areq.Pipeline = opts.Pipeline
	}
	auth := p.env.Auth(p.cfg.Stream)
	if d := auth.Authorize(ctx, areq); !d.Allow {
		return "denied", fmt.Errorf("publish %s denied: %s", p.cfg.Stream, d.Reason)
	}
	pub, err := p.env.Hub.Publish(p.cfg.Stream, info)
	if err != nil {
		return "refused", err
	}
	defer func() {
		areq.Action = pipeline.ActionUnpublish
		nctx, ncancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer ncancel()
		auth.Notify(nctx, areq)
	}()
	defer pub.Close()
	p.connects.Inc()
	start := time.Now()
	p.log.Info("pull connected")

	body := &idleReader{r: resp.Body, t: watchdog, idle: p.cfg.idle, count: p.bytesIn}
	rd := flv.NewReader(body, p.cfg.MaxTagSize)
	d := flvdemux.Demuxer{Sink: pub, Log: p.log}
	err = copyFLV(rd, pub, &d)
	if err == nil {
		err = errUpstreamEnded
	}
	cause := p.cause(ctx, err)
	p.log.Info("pull session ended", "cause", cause, "duration", time.Since(start).Round(time.Millisecond),
		"bytes", body.n, "units", d.Units(), "offset", offsetOf(rd, err))
	return cause, p.err(ctx, err)
}

func (p *Pull) cause(ctx context.Context, err error) string {
	switch {
	case errors.Is(err, errUpstreamEnded):
		return "upstream_ended"
	case errors.Is(context.Cause(ctx), errIdle):
		return "timeout"
	case errors.Is(err, pipeline.ErrStreamEnded):
		return "shutdown"
	}
	var pe *flv.ParseError
	if errors.As(err, &pe) {
		return causeOf(context.WithoutCancel(ctx), err)
	}
	return "connect_error"
}

// err replaces a bare context error with the idle timeout that caused it.
func (p *Pull) err(ctx context.Context, err error) error {
	if c := context.Cause(ctx); errors.Is(c, errIdle) {
		return c
	}
	return err
}

// idleReader pushes the idle watchdog back on every read that returns data.
type idleReader struct {
	r     io.Reader
	t     *time.Timer
	idle  time.Duration
	n     int64
	count *pipeline.Counter
}

func (b *idleReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if n > 0 {
		b.t.Reset(b.idle)
		b.n += int64(n)
		b.count.Add(uint64(n))
	}
	return n, err
}

var _ pipeline.Stage = (*Pull)(nil)
