package flvhttp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/config"
	"github.com/sluice-media/sluice/pipeline/media/flv"
	"github.com/sluice-media/sluice/pipeline/media/flvdemux"
)

// PushConfig is the body of an `ingest "flv_http"` block.
type PushConfig struct {
	// MaxTagSize is the largest FLV tag accepted, in bytes; a bigger one
	// closes the publisher. 8 MiB by default.
	MaxTagSize int `hcl:"max_tag_size,optional"`
	// IdleTimeout closes a publisher whose body delivers nothing for this
	// long.
	IdleTimeout string `hcl:"idle_timeout,optional"`

	idle time.Duration
}

// Defaults fills the defaults before decoding.
func (c *PushConfig) Defaults() {
	c.MaxTagSize = DefaultMaxTagSize
	c.IdleTimeout = "10s"
}

// Validate checks and converts the fields.
func (c *PushConfig) Validate() error {
	if err := validTagSize(c.MaxTagSize); err != nil {
		return err
	}
	var err error
	c.idle, err = positiveDuration("idle_timeout", c.IdleTimeout)
	return err
}

func validTagSize(n int) error {
	if n < 1024 || n > maxFLVTagSize {
		return &config.FieldError{Attr: "max_tag_size", Err: fmt.Errorf("%d is out of range; use 1024 to %d bytes (the FLV tag size field is 24 bits)", n, maxFLVTagSize)}
	}
	return nil
}

func positiveDuration(attr, s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, &config.FieldError{Attr: attr, Err: fmt.Errorf("%q is not a positive duration such as \"10s\"", s)}
	}
	return d, nil
}

// Register adds the "flv_http" (push) and "flv_pull" ingest kinds.
func Register(k *pipeline.Kinds) {
	pipeline.Add(k, "ingest", "flv_http", func(c *PushConfig, env pipeline.Env) (pipeline.Stage, error) {
		if env.HTTP == nil {
			return nil, errors.New(`ingest "flv_http" needs the HTTP listener; set server { http = ":8080" }`)
		}
		p := newPush(c, env)
		// Every pipeline: the stream path picks the pipeline, as for RTMP.
		env.HTTP.Handle("", http.MethodPost, pipeline.Suffix(".flv"), p.serve)
		env.HTTP.Handle("", http.MethodPut, pipeline.Suffix(".flv"), p.serve)
		return p, nil
	})
	pipeline.Add(k, "ingest", "flv_pull", func(c *PullConfig, env pipeline.Env) (pipeline.Stage, error) {
		return newPull(c, env)
	})
}

// Push is the FLV-over-HTTP publish endpoint. Its requests are served by the
// shared HTTP listener; Run only marks the stage's lifetime.
type Push struct {
	cfg PushConfig
	env pipeline.Env
	log *slog.Logger

	publishes *pipeline.Counter
	rejected  *pipeline.CounterVec
	closed    *pipeline.CounterVec
	bytesIn   *pipeline.Counter

	// quit is closed when the stage stops.
	quit chan struct{}
}

func newPush(c *PushConfig, env pipeline.Env) *Push {
	m := env.Metrics
	return &Push{
		cfg:       *c,
		env:       env,
		log:       env.Log,
		publishes: m.Counter("sluice_flvhttp_publishes_total", "FLV-over-HTTP publish sessions started.").With(),
		rejected:  m.Counter("sluice_flvhttp_rejected_total", "FLV-over-HTTP publish requests refused, by reason.", "reason"),
		closed:    m.Counter("sluice_flvhttp_closed_total", "FLV-over-HTTP publish sessions ended, by cause.", "cause"),
		bytesIn:   m.Counter("sluice_flvhttp_received_bytes_total", "Bytes of FLV received from HTTP publishers.").With(),
		quit:      make(chan struct{}),
	}
}

// Run waits for ctx to end. Sessions end with the HTTP listener's context.
func (p *Push) Run(ctx context.Context) error {
	<-ctx.Done()
	close(p.quit)
	return nil
}

// sessionContext returns a context that ends when the stage stops. Unlike
// r.Context(), which net/http also cancels when a body read fails, it tells a
// shutdown apart from a stalled or broken publisher.
func (p *Push) sessionContext(r *http.Request) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
	go func() {
		select {
		case <-p.quit:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// serve runs one publish request: auth, the stream claim, then the body,
// tag by tag, until it ends.
func (p *Push) serve(w http.ResponseWriter, r *http.Request, stream, _ string) {
	ctx := r.Context()
	log := p.log.With("stream", stream, "remote", r.RemoteAddr, "proto", "http-flv", "method", r.Method)
	info := pipeline.ClientInfo{Proto: "http-flv", Remote: r.RemoteAddr, Query: r.URL.RawQuery}
	req := pipeline.AuthRequest{Proto: "http-flv", Remote: r.RemoteAddr, Path: stream, Query: r.URL.RawQuery,
		Node: p.env.Node, URL: r.URL.String()}
	if opts, ok := p.env.Hub.Resolve(stream); ok {
		req.Pipeline = opts.Pipeline
	}
	auth := p.env.Auth(stream)
	// As for RTMP: the connect hook, then the publish hook, both before
	// anything is read.
	for _, a := range []pipeline.Action{pipeline.ActionConnect, pipeline.ActionPublish} {
		req.Action = a
		d := auth.Authorize(ctx, req)
		if d.Allow {
			continue
		}
		p.rejected.With("denied").Inc()
		w.Header().Set("Connection", "close")
		if d.Redirect != "" {
			log.Warn("publish redirected", "action", a, "to", d.Redirect)
		} else {
			log.Warn("publish denied", "action", a, "reason", d.Why())
		}
		pipeline.RefuseHTTP(w, r, d, fmt.Sprintf("%s %s: %s", a, stream, d.Why()))
		return
	}

	pub, err := p.env.Hub.Publish(stream, info)
	if err != nil {
		status, reason := pipeline.PublishStatus(err)
		p.rejected.With(reason).Inc()
		log.Warn("publish refused", "reason", err)
		w.Header().Set("Connection", "close")
		http.Error(w, stream+": "+err.Error(), status)
		return
	}
	defer func() {
		req.Action = pipeline.ActionUnpublish
		nctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		auth.Notify(nctx, req)
	}()
	defer pub.Close()
	p.publishes.Inc()
	log.Info("publish started")
	start := time.Now()

	ctx, cancel := p.sessionContext(r)
	defer cancel()
	// A stalled body is cut by a read deadline pushed forward on every
	// read; shutdown pulls the deadline in, which ends a blocked read.
	rc := http.NewResponseController(w)
	body := &deadlineReader{r: r.Body, rc: rc, idle: p.cfg.idle, ctx: ctx, count: p.bytesIn}
	stop := context.AfterFunc(ctx, func() { _ = rc.SetReadDeadline(time.Now()) })
	defer stop()

	rd := flv.NewReader(body, p.cfg.MaxTagSize)
	d := flvdemux.Demuxer{Sink: pub, Log: log}
	err = copyFLV(rd, pub, &d)
	cause := causeOf(ctx, err)
	p.closed.With(cause).Inc()
	attrs := []any{"cause", cause, "duration", time.Since(start).Round(time.Millisecond), "bytes", body.n, "units", d.Units()}
	switch cause {
	case "ended":
		log.Info("publish ended", attrs...)
		w.WriteHeader(http.StatusNoContent)
		return
	case "shutdown":
		log.Info("publish ended", attrs...)
		w.Header().Set("Connection", "close")
		http.Error(w, "server is shutting down", http.StatusServiceUnavailable)
		return
	}
	log.Warn("publish ended", append(attrs, "offset", offsetOf(rd, err), "err", err)...)
	w.Header().Set("Connection", "close")
	status := http.StatusBadRequest
	if cause == "timeout" {
		status = http.StatusRequestTimeout
	}
	http.Error(w, err.Error(), status)
}

// deadlineReader reads a request body with an idle deadline renewed before
// every read.
type deadlineReader struct {
	r    io.Reader
	rc   *http.ResponseController
	idle time.Duration
	ctx  context.Context
	n    int64
	// count is the received-bytes counter, kept current while the
	// session runs.
	count *pipeline.Counter
}

func (b *deadlineReader) Read(p []byte) (int, error) {
	if err := b.rc.SetReadDeadline(time.Now().Add(b.idle)); err != nil {
		return 0, err
	}
	// Checked after the deadline is set: if shutdown came first, its
	// deadline may just have been overwritten.
	if err := b.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := b.r.Read(p)
	b.n += int64(n)
	b.count.Add(uint64(n))
	return n, err
}

var _ pipeline.Stage = (*Push)(nil)
