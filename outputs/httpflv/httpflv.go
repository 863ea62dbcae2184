// Package httpflv serves streams as HTTP-FLV: GET /APP/NAME.flv answers with
// an endless chunked FLV body that starts at the GOP cache.
package httpflv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/config"
	"github.com/sluice-media/sluice/pipeline/media/flv"
	"github.com/sluice-media/sluice/pipeline/wire"
)

// Config is the body of an `output "http_flv"` block.
type Config struct {
	// WriteTimeout drops a player whose socket accepts nothing for this long.
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
	pipeline.Add(k, "output", "http_flv", func(c *Config, env pipeline.Env) (pipeline.Stage, error) {
		if env.HTTP == nil {
			return nil, errors.New(`output "http_flv" needs the HTTP listener; set server { http = ":8080" }`)
		}
		o := &Output{cfg: *c, env: env, log: env.Log}
		m := env.Metrics
		o.plays = m.Counter("sluice_httpflv_plays_total", "HTTP-FLV play sessions started.").With()
		o.closed = m.Counter("sluice_httpflv_closed_total", "HTTP-FLV sessions ended, by cause.", "cause")
		o.bytes = m.Counter("sluice_httpflv_sent_bytes_total", "Bytes sent to HTTP-FLV players.").With()
		env.HTTP.Handle(env.Pipeline.Name, http.MethodGet, pipeline.Suffix(".flv"), o.serve)
		return o, nil
	})
}

// Output is the HTTP-FLV output of one pipeline. Its requests are served by
// the shared HTTP listener; Run only marks the stage's lifetime.
type Output struct {
	cfg    Config
	env    pipeline.Env
	log    *slog.Logger
	plays  *pipeline.Counter
	bytes  *pipeline.Counter
	closed *pipeline.CounterVec
}

// Run waits for ctx to end. Sessions end with the HTTP listener's context.
func (o *Output) Run(ctx context.Context) error {
	<-ctx.Done()
	return nil
}

var crlf = []byte("\r\n")

func (o *Output) serve(w http.ResponseWriter, r *http.Request, stream, _ string) {
	log := o.log.With("stream", stream, "remote", r.RemoteAddr, "proto", "http-flv")
	h := w.Header()
	h.Set("Content-Type", "video/x-flv")
	h.Set("Cache-Control", "no-cache, no-store")
	if r.Method == http.MethodHead {
		if s := o.env.Hub.Stream(stream); s == nil || s.Info().State != "live" && s.Info().State != "held" {
			http.Error(w, "stream not found", http.StatusNotFound)
		}
		return
	}
	info := pipeline.ClientInfo{Proto: "http-flv", Remote: r.RemoteAddr, Query: r.URL.RawQuery}
	req := pipeline.AuthRequest{Action: pipeline.ActionPlay, Proto: "http-flv", Remote: r.RemoteAddr, Path: stream,
		Query: r.URL.RawQuery, Pipeline: o.env.Pipeline.Name, Node: o.env.Node, URL: r.URL.String()}
	auth := o.env.Auth(stream)
	if d := auth.Authorize(r.Context(), req); !d.Allow {
		if d.Redirect == "" {
			log.Warn("play denied", "reason", d.Why())
		}
		pipeline.RefuseHTTP(w, r, d, d.Why())
		return
	}
	defer func() {
		req.Action = pipeline.ActionStop
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		auth.Notify(ctx, req)
	}()
	rd, err := o.env.Hub.Play(r.Context(), stream, info)
	if err != nil {
		status := http.StatusNotFound
		if errors.Is(err, pipeline.ErrHubClosed) {
			status = http.StatusServiceUnavailable
		}
		log.Info("play refused", "err", err)
		http.Error(w, stream+": "+err.Error(), status)
		return
	}
	defer rd.Close()

	hj, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, "HTTP-FLV needs HTTP/1.x", http.StatusHTTPVersionNotSupported)
		return
	}
	nc, _, err := hj.Hijack()
	if err != nil {
		log.Warn("hijack failed", "err", err)
		return
	}
	defer nc.Close()
	o.plays.Inc()
	log.Info("play started")
	start := time.Now()

	// The connection is ours now: drain what the client sends (nothing,
	// normally) so that its closing ends the session at once.
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		// A small buffer on the goroutine's stack: io.Discard would hold
		// an 8 KiB pooled buffer per idle player for the whole session.
		var b [256]byte
		for {
			if _, err := nc.Read(b[:]); err != nil {
				break
			}
		}
		cancel()
	}()

	chunked := r.ProtoAtLeast(1, 1)
	n, err := o.stream(ctx, nc, rd, chunked)
	n += rd.DirectWritten()
	cause := "client_closed"
	switch {
	case errors.Is(err, pipeline.ErrStreamEnded):
		cause = "stream_ended"
	case errors.Is(err, pipeline.ErrReaderTooSlow):
		cause = "too_slow"
	case r.Context().Err() != nil:
		cause = "shutdown"
	case ctx.Err() == nil:
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			cause = "timeout"
		}
	}
	if chunked && (cause == "stream_ended" || cause == "shutdown") {
		// The terminating chunk tells the player the stream is over rather
		// than cut off.
		_ = nc.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = nc.Write([]byte("0\r\n\r\n"))
	}
	nc.Close()
	<-drained
	o.bytes.Add(uint64(n))
	o.closed.With(cause).Inc()
	attrs := []any{"cause", cause, "duration", time.Since(start).Round(time.Millisecond), "bytes", n}
	if cause == "too_slow" || cause == "timeout" {
		log.Warn("play stopped", attrs...)
	} else {
		log.Info("play stopped", attrs...)
	}
}

// stream writes the response: headers, the FLV header, metadata and sequence
// headers, then batches of shared, pre-serialized tags, each batch one HTTP
// chunk written with one writev.
func (o *Output) stream(ctx context.Context, nc net.Conn, rd *pipeline.Reader, chunked bool) (int64, error) {
	s := rd.Stream()
	video, audio := s.Tracks()
	head := []byte("HTTP/1.1 200 OK\r\n" +
		"Content-Type: video/x-flv\r\n" +
		"Cache-Control: no-cache, no-store\r\n" +
		"Access-Control-Allow-Origin: *\r\n" +
		"Connection: close\r\n")
	if chunked {
		head = append(head, "Transfer-Encoding: chunked\r\n"...)
	}
	head = append(head, "\r\n"...)
	_ = nc.SetWriteDeadline(time.Now().Add(o.cfg.write))
	if _, err := nc.Write(head); err != nil {
		return 0, err
	}

	var (
		total   int64
		sent    [2]*pipeline.Track
		iov     = make(net.Buffers, 0, 64)
		sizeBuf = make([]byte, 0, 18)
		// all is what WriteTo consumes; declared once, since a variable
		// declared in the loop escapes (WriteTo has a pointer receiver) and
		// would cost an allocation per write.
		all     net.Buffers
		refresh time.Time
	)
	fileHeader := flv.AppendFileHeader(nil, audio != nil, video != nil)
	iov = append(iov, nil, fileHeader) // iov[0] is the chunk size line
	if md := s.Metadata(); md != nil {
		iov = append(iov, md.Wire(pipeline.WireFLV, wire.FLVMetadataTag).Bufs...)
	}
	// In latency mode, the stream's writers send the tags of a player that
	// keeps up, each write one chunk; Next returns the rest.
	rd.Direct(nc, pipeline.DirectOptions{Format: pipeline.WireFLV, Encode: wire.FLVTag, Chunked: chunked, WriteTimeout: o.cfg.write})
	for {
		batch, err := rd.Next(ctx)
		if err != nil {
			return total, err
		}
		for _, au := range batch {
			k := au.Track.Kind()
			if sent[k] != au.Track {
				if w := au.Track.Wire(pipeline.WireFLV, wire.FLVConfigTag); w != nil {
					iov = append(iov, w.Bufs...)
				}
				sent[k] = au.Track
			}
			iov = append(iov, au.Wire(pipeline.WireFLV, wire.FLVTag).Bufs...)
		}
		all = iov[1:]
		if chunked {
			size := 0
			for _, b := range all {
				size += len(b)
			}
			sizeBuf = strconv.AppendInt(sizeBuf[:0], int64(size), 16)
			sizeBuf = append(sizeBuf, crlf...)
			iov[0] = sizeBuf
			iov = append(iov, crlf)
			all = iov
		}
		// The deadline is moved every half write timeout, not every batch:
		// a stuck player is still cut after between half and all of it.
		if now := time.Now(); now.After(refresh) {
			_ = nc.SetWriteDeadline(now.Add(o.cfg.write))
			refresh = now.Add(o.cfg.write / 2)
		}
		n, err := all.WriteTo(nc)
		total += n
		clear(iov)
		iov = iov[:1] // slot 0 stays reserved for the chunk size line
		if err != nil {
			return total, err
		}
	}
}

var _ pipeline.Stage = (*Output)(nil)
