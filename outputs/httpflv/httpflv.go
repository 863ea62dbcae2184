// Package httpflv serves streams as HTTP-FLV: GET /APP/NAME.flv answers with
// an endless FLV body that starts at the GOP cache, chunked over HTTP/1.1
// and as one stream of a shared connection over cleartext HTTP/2.
package httpflv

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/config"
	"github.com/sluice-media/sluice/pipeline/media/flv"
	"github.com/sluice-media/sluice/pipeline/wire"
)

// Config is the body of an `output "http_flv"` block.
type Config struct {
	// WriteTimeout drops a player whose connection (over HTTP/2, whose
	// stream) accepts nothing for this long.
	WriteTimeout string `hcl:"write_timeout,optional"`

	write time.Duration
}

// Defaults fills the defaults before decoding.
func (c *Config) Defaults() { c.WriteTimeout = "10s" }

// Validate checks the fields.
func (c *Config) Validate() error {
	d, err := time.ParseDuration(c.WriteTimeout)
	if err != nil || d <= 0 {
		return &config.FieldError{Attr: "write_timeout", Err: fmt.Errorf("%q is not a positive duration such as \"10s\"", c.WriteTimeout)}
	}
	c.write = d
	return nil
}

// Register adds the "http_flv" output kind.
func Register(k *pipeline.Kinds) {
	pipeline.Add(k, "pipeline.output", "http_flv", func(c *Config, env pipeline.Env) (pipeline.Stage, error) {
		if env.HTTP == nil {
			return nil, errors.New(`output "http_flv" needs the HTTP listener; set server { http = ":8080" }`)
		}
		o := &Output{cfg: *c, env: env, log: env.Log}
		env.HTTP.Handle(env.Pipeline.Name, http.MethodGet, pipeline.Suffix(".flv"), o.serve)
		return o, nil
	})
}

// Output is the HTTP-FLV output of one pipeline. Its requests are served by
// the shared HTTP listener; Run only marks the stage's lifetime.
type Output struct {
	pipeline.Served
	cfg Config
	env pipeline.Env
	log *slog.Logger
}

func (o *Output) serve(w http.ResponseWriter, r *http.Request, stream, _ string) {
	log := o.log.With("stream", stream, "remote", r.RemoteAddr, "proto", "http-flv", "http_version", r.Proto)
	h := w.Header()
	h.Set("Content-Type", "video/x-flv")
	h.Set("Cache-Control", "no-cache, no-store")
	if r.Method == http.MethodHead {
		if s := o.env.Hub.Stream(stream); s == nil || s.Info().State != "live" && s.Info().State != "held" {
			http.Error(w, "stream not found", http.StatusNotFound)
		}
		return
	}
	ctx := r.Context()
	rd, err := o.env.Gate.Play(ctx, pipeline.Request{Path: stream, URL: r.URL.String(),
		Client: pipeline.ClientInfo{Proto: "http-flv", Remote: r.RemoteAddr, Query: r.URL.RawQuery}})
	if err != nil {
		ref := pipeline.RefusalOf(err)
		log.Info("play refused", "reason", ref.Reason, "err", err)
		ref.WriteHTTP(w, r)
		return
	}
	defer rd.Close()
	video, audio := rd.Stream().Tracks()
	opts := pipeline.PlayerOptions{
		Format:       pipeline.WireFLV,
		Unit:         wire.FLVTag,
		Header:       wire.FLVConfigTag,
		Metadata:     wire.FLVMetadataTag,
		Lead:         flv.AppendFileHeader(nil, audio != nil, video != nil),
		WriteTimeout: o.cfg.write,
		Log:          log,
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		// HTTP/2 (an edge pulling every stream of an origin over one
		// connection): there is no connection of the stream's own to take
		// over, so the body goes through the response writer.
		pipeline.PlayResponse(w, r, rd, opts)
		return
	}
	nc, _, err := hj.Hijack()
	if err != nil {
		rd.Finish("hijack_failed")
		log.Warn("hijack failed", "err", err)
		return
	}
	defer nc.Close()

	// HTTP/1.x: the output writes the socket itself, so that a batch is
	// one writev and latency mode can write it directly. The response head
	// is the router's headers (CORS included) plus the framing, written by
	// hand since the connection is hijacked.
	chunked := r.ProtoAtLeast(1, 1)
	h.Set("Connection", "close")
	if chunked {
		h.Set("Transfer-Encoding", "chunked")
	}
	var head bytes.Buffer
	head.WriteString("HTTP/1.1 200 OK\r\n")
	_ = h.Write(&head)
	head.WriteString("\r\n")
	opts.Preamble = head.Bytes()
	if chunked {
		// The terminating chunk tells the player the stream is over
		// rather than cut off.
		opts.Framing = pipeline.HTTPChunks{}
		opts.End = func() error { _, err := nc.Write(pipeline.HTTPLastChunk); return err }
	}
	pipeline.Play(ctx, nc, rd, opts)
}

var _ pipeline.Stage = (*Output)(nil)
