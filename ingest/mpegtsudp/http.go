package mpegtsudp

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

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
		m := env.Metrics
		h.publishes = m.Counter("sluice_mpegts_http_publishes_total", "MPEG-TS over HTTP publish sessions started.").With()
		h.rejected = m.Counter("sluice_mpegts_http_rejected_total", "MPEG-TS over HTTP pushes refused, by reason.", "reason")
		h.bytes = m.Counter("sluice_mpegts_http_received_bytes_total", "Bytes received from MPEG-TS over HTTP pushes.").With()
		env.HTTP.Handle("", http.MethodPost, pipeline.Suffix(".ts"), h.serve)
		return h, nil
	})
}

// HTTPIngest is the mpegts_http stage. Its requests are served by the shared
// HTTP listener; Run only marks the stage's lifetime.
type HTTPIngest struct {
	cfg       HTTPConfig
	env       pipeline.Env
	log       *slog.Logger
	publishes *pipeline.Counter
	bytes     *pipeline.Counter
	rejected  *pipeline.CounterVec
}

// Run waits for ctx to end. Pushes end with the HTTP listener's context.
func (h *HTTPIngest) Run(ctx context.Context) error {
	<-ctx.Done()
	return nil
}

func (h *HTTPIngest) serve(w http.ResponseWriter, r *http.Request, stream, _ string) {
	remote := r.RemoteAddr
	log := h.log.With("stream", stream, "remote", remote, "proto", "mpegts-http")
	info := pipeline.ClientInfo{Proto: "mpegts-http", Remote: remote, Query: r.URL.RawQuery}
	req := pipeline.AuthRequest{Action: pipeline.ActionPublish, Proto: "mpegts-http", Remote: remote, Path: stream, Query: r.URL.RawQuery, Node: h.env.Node, URL: r.URL.String()}
	if opts, ok := h.env.Hub.Resolve(stream); ok {
		req.Pipeline = opts.Pipeline
	}
	auth := h.env.Auth(stream)
	if d := auth.Authorize(r.Context(), req); !d.Allow {
		h.rejected.With("denied").Inc()
		log.Warn("publish refused", "reason", d.Why())
		pipeline.RefuseHTTP(w, r, d, d.Why())
		return
	}
	pub, err := h.env.Hub.Publish(stream, info)
	if err != nil {
		code, reason := pipeline.PublishStatus(err)
		h.rejected.With(reason).Inc()
		log.Warn("publish refused", "reason", err.Error())
		http.Error(w, err.Error(), code)
		return
	}
	defer pub.Close()
	defer func() {
		req.Action = pipeline.ActionUnpublish
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		auth.Notify(ctx, req)
	}()
	h.publishes.Inc()
	start := time.Now()
	log.Info("publish started")

	// The body is read under a deadline renewed with every read, and cut
	// short when the server stops: a stalled or endless push cannot hold
	// the listener's shutdown.
	rc := http.NewResponseController(w)
	body := &deadlineReader{ctx: r.Context(), r: r.Body, rc: rc, idle: h.cfg.idle}
	stop := context.AfterFunc(r.Context(), func() { _ = rc.SetReadDeadline(time.Now()) })
	defer stop()
	sp := &streamPackets{r: bufio.NewReaderSize(body, 64<<10)}
	out := &pubSink{pub: pub}
	d := newDemuxer(sp, out, log, newDemuxCounters(h.env.Metrics, stream))
	sp.ev = d
	err = d.run()
	h.bytes.Add(uint64(body.n))

	attrs := []any{"duration", time.Since(start).Round(time.Millisecond), "bytes", body.n, "units", out.units}
	switch {
	case errors.Is(err, io.EOF):
		log.Info("publish ended", attrs...)
		w.WriteHeader(http.StatusNoContent)
	case r.Context().Err() != nil, errors.Is(err, pipeline.ErrStreamEnded):
		log.Info("publish ended by shutdown", attrs...)
	default:
		log.Warn("publish ended", append(attrs, "err", err)...)
	}
}

// deadlineReader renews the connection's read deadline before every read.
type deadlineReader struct {
	ctx  context.Context
	r    io.Reader
	rc   *http.ResponseController
	idle time.Duration
	n    int64
}

func (d *deadlineReader) Read(p []byte) (int, error) {
	if err := d.ctx.Err(); err != nil {
		return 0, err
	}
	_ = d.rc.SetReadDeadline(time.Now().Add(d.idle))
	if d.ctx.Err() != nil {
		_ = d.rc.SetReadDeadline(time.Now())
	}
	n, err := d.r.Read(p)
	d.n += int64(n)
	return n, err
}

var _ pipeline.Stage = (*HTTPIngest)(nil)
