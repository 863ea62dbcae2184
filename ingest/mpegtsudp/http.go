package mpegtsudp

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"syscall"
	"time"

	"github.com/sluice-media/sluice/ingest/mpegts"
	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/config"
)

// HTTPConfig is the body of an `ingest "mpegts_http"` block: MPEG-TS pushed
// as the body of POST /APP/NAME.ts on the shared HTTP listener.
type HTTPConfig struct {
	// IdleTimeout ends a push whose body delivers nothing for this long.
	IdleTimeout string `hcl:"idle_timeout,optional"`

	idle time.Duration
}

// Defaults fills the defaults before decoding.
func (c *HTTPConfig) Defaults() { c.IdleTimeout = "10s" }

// Validate checks the fields.
func (c *HTTPConfig) Validate() error {
	d, err := time.ParseDuration(c.IdleTimeout)
	if err != nil || d <= 0 {
		return &config.FieldError{Attr: "idle_timeout", Err: fmt.Errorf("%q is not a positive duration such as \"10s\"", c.IdleTimeout)}
	}
	c.idle = d
	return nil
}

func registerHTTP(k *pipeline.Kinds) {
	pipeline.Add(k, "ingest", "mpegts_http", func(c *HTTPConfig, env pipeline.Env) (pipeline.Stage, error) {
		if env.HTTP == nil {
			return nil, errors.New(`ingest "mpegts_http" needs the HTTP listener; set server { http = ":8080" }`)
		}
		h := &HTTPIngest{cfg: *c, env: env, log: env.Log}
		env.HTTP.Handle("", http.MethodPost, pipeline.Suffix(".ts"), h.serve)
		return h, nil
	})
}

// HTTPIngest is the mpegts_http stage. Its requests are served by the shared
// HTTP listener under the stage's context (pipeline.Routes).
type HTTPIngest struct {
	pipeline.Served
	cfg HTTPConfig
	env pipeline.Env
	log *slog.Logger
}

func (h *HTTPIngest) serve(w http.ResponseWriter, r *http.Request, stream, _ string) {
	ctx := r.Context()
	log := h.log.With("stream", stream, "remote", r.RemoteAddr, "proto", "mpegts-http")
	pub, err := h.env.Gate.Publish(ctx, pipeline.Request{Path: stream, URL: r.URL.String(),
		Client: pipeline.ClientInfo{Proto: "mpegts-http", Remote: r.RemoteAddr, Query: r.URL.RawQuery}})
	if err != nil {
		ref := pipeline.RefusalOf(err)
		log.Warn("publish refused", "reason", ref.Reason, "err", err)
		ref.WriteHTTP(w, r)
		return
	}
	var cause string
	defer func() { pub.Finish(cause) }()
	start := time.Now()
	log.Info("publish started")

	body := pipeline.NewPushBody(w, r, h.cfg.idle, pub)
	defer body.Close()
	out := &pubSink{pub: pub}
	d := mpegts.NewStream(bufio.NewReaderSize(body, 64<<10), out, log, mpegts.NewCounters(h.env.Metrics, stream))
	err = d.Run()
	if errors.Is(err, io.EOF) && body.Err() != nil && !errors.Is(body.Err(), io.EOF) {
		// The demuxer ends at the body's end either way; the body knows
		// whether that end was clean or a cut (a truncated chunk).
		err = body.Err()
	}
	cause = pushCause(ctx, err)
	kicked := pub.KickCause()
	if kicked != "" {
		cause = kicked
	}
	attrs := []any{"cause", cause, "duration", time.Since(start).Round(time.Millisecond), "bytes", body.N(), "units", out.units}
	if cause == "ended" || cause == "shutdown" || kicked != "" {
		log.Info("publish ended", attrs...)
	} else {
		// Whatever else ended the push, it was the client's doing (a
		// broken connection, a stall, a body that is not MPEG-TS).
		log.Warn("publish ended", append(attrs, "err", err)...)
	}
	pipeline.AnswerPush(w, r, cause, err)
}

// pushCause names why a push ended: ended (the body ended cleanly),
// shutdown (the stage stopped), client_closed (the connection broke),
// timeout (nothing for idle_timeout), protocol_error (not MPEG-TS).
// A client that resets its connection also cancels the request's context,
// so only pipeline.Stopped, never ctx.Err, means shutdown.
func pushCause(ctx context.Context, err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, io.EOF):
		return "ended"
	case pipeline.Stopped(ctx), errors.Is(err, pipeline.ErrStreamEnded):
		return "shutdown"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, context.Canceled), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "client_closed"
	}
	return "protocol_error"
}

var _ pipeline.Stage = (*HTTPIngest)(nil)
