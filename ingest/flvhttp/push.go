package flvhttp

import (
	"errors"
	"fmt"
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

// Register adds the "flv_http" (push) ingest kind. (Pulls are in
// ingest/pull, on the client of this package.)
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
}

// Push is the FLV-over-HTTP publish endpoint. Its requests are served by
// the shared HTTP listener under the stage's context (pipeline.Routes).
type Push struct {
	pipeline.Served
	cfg PushConfig
	env pipeline.Env
	log *slog.Logger
}

func newPush(c *PushConfig, env pipeline.Env) *Push {
	return &Push{cfg: *c, env: env, log: env.Log}
}

// serve runs one publish request: admission, then the body, tag by tag,
// until it ends.
func (p *Push) serve(w http.ResponseWriter, r *http.Request, stream, _ string) {
	ctx := r.Context()
	log := p.log.With("stream", stream, "remote", r.RemoteAddr, "proto", "http-flv", "method", r.Method)
	pub, err := p.env.Gate.Publish(ctx, pipeline.Request{Path: stream, URL: r.URL.String(),
		Client: pipeline.ClientInfo{Proto: "http-flv", Remote: r.RemoteAddr, Query: r.URL.RawQuery}})
	if err != nil {
		ref := pipeline.RefusalOf(err)
		log.Warn("publish refused", "reason", ref.Reason, "err", err)
		ref.WriteHTTP(w, r)
		return
	}
	var cause string
	defer func() { pub.Finish(cause) }()
	log.Info("publish started")
	start := time.Now()

	body := pipeline.NewPushBody(w, r, p.cfg.idle, pub)
	defer body.Close()
	rd := flv.NewReader(body, p.cfg.MaxTagSize)
	lim := p.env.Gate.Limits()
	d := flvdemux.Demuxer{Sink: pub, Log: log, MaxAMFDepth: lim.AMFMaxDepth, MaxAMFString: lim.AMFMaxString}
	err = copyFLV(rd, pub, &d)
	if le := (*pipeline.LimitError)(nil); errors.As(err, &le) {
		// Logged below, with the session's end.
		p.env.Gate.CountLimit(le.Limit)
	}
	cause = causeOf(ctx, err)
	kicked := pub.KickCause()
	if kicked != "" {
		cause = kicked
	}
	attrs := []any{"cause", cause, "duration", time.Since(start).Round(time.Millisecond), "bytes", body.N(), "units", d.Units()}
	if cause == "ended" || cause == "shutdown" || kicked != "" {
		log.Info("publish ended", attrs...)
	} else {
		log.Warn("publish ended", append(attrs, "offset", offsetOf(rd, err), "err", err)...)
	}
	pipeline.AnswerPush(w, r, cause, err)
}

var _ pipeline.Stage = (*Push)(nil)
