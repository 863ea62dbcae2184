package rtmp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/bluenviron/gortmplib"
	"github.com/bluenviron/gortmplib/pkg/amf0"
	"github.com/bluenviron/gortmplib/pkg/message"

	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/media/flvdemux"
	"github.com/sluice-media/sluice/pipeline/wire"
)

// statusChunkStreamID and statusStreamID are where the RTMP library sends its
// onStatus commands; ours go to the same place so that clients see them in
// the one order.
const (
	statusChunkStreamID = 5
	statusStreamID      = 0x1000000
)

type conn struct {
	s   *Server
	nc  net.Conn
	log *slog.Logger
}

func newConn(s *Server, nc net.Conn, id uint64) *conn {
	return &conn{s: s, nc: nc, log: s.log.With("conn", id, "remote", nc.RemoteAddr().String(), "proto", "rtmp")}
}

// serve runs one connection: handshake, connect, then publish or play.
func (c *conn) serve(ctx context.Context) {
	defer c.nc.Close()
	// Until the session starts, shutdown and the handshake deadline are the
	// only things that end a connection; a client that connects and never
	// speaks is closed by the deadline.
	_ = c.nc.SetDeadline(time.Now().Add(c.s.cfg.handshake))
	stop := context.AfterFunc(ctx, func() { c.nc.Close() })
	sc := &gortmplib.ServerConn{RW: c.nc}
	if err := sc.Initialize(); err != nil {
		stop()
		c.closed("handshake", err, ctx)
		return
	}
	if err := sc.AcceptConn(); err != nil {
		stop()
		c.closed("connect", err, ctx)
		return
	}
	stop()
	path, query := streamPath(sc.URL)
	info := pipeline.ClientInfo{Proto: "rtmp", Remote: c.nc.RemoteAddr().String(), Query: query}
	c.log = c.log.With("stream", path)
	if err := pipeline.ValidPath(path); err != nil {
		c.refuse(sc, "bad_path", err.Error())
		return
	}
	// The library answers connect and reads up to publish or play in one
	// step, so the connect hook runs here, before the client is told its
	// publish or play started.
	action := pipeline.ActionPlay
	if sc.Publish {
		action = pipeline.ActionPublish
	}
	if !c.authorize(ctx, sc, pipeline.ActionConnect, path, info) || !c.authorize(ctx, sc, action, path, info) {
		return
	}
	if sc.Publish {
		c.publish(ctx, sc, path, info)
	} else {
		c.play(ctx, sc, path, info)
	}
}

// streamPath takes the stream path and query string from the URL the client
// used. Clients put the query either on the stream key (rtmp://h/live/key?t=1)
// or on the application (rtmp://h/live?t=1 with key "key"); the library joins
// the latter into "live?t=1/key", which is taken apart here.
func streamPath(u *url.URL) (path, query string) {
	path, query = strings.Trim(u.Path, "/"), u.RawQuery
	if i := strings.IndexByte(query, '/'); i >= 0 {
		key := query[i+1:]
		query = query[:i]
		if j := strings.IndexByte(key, '?'); j >= 0 {
			query += "&" + key[j+1:]
			key = key[:j]
		}
		path += "/" + key
	}
	return path, query
}

// authorize asks the pipeline's authorizer and refuses the request on a
// denial.
func (c *conn) authorize(ctx context.Context, sc *gortmplib.ServerConn, action pipeline.Action, path string, info pipeline.ClientInfo) bool {
	req := pipeline.AuthRequest{Action: action, Proto: "rtmp", Remote: info.Remote, Path: path, Query: info.Query, Node: c.s.env.Node}
	if opts, ok := c.s.env.Hub.Resolve(path); ok {
		req.Pipeline = opts.Pipeline
	}
	d := c.s.env.Auth(path).Authorize(ctx, req)
	if d.Allow {
		return true
	}
	if d.Redirect != "" {
		c.redirect(sc, action, path, d.Redirect)
		return false
	}
	c.refuse(sc, "denied", fmt.Sprintf("%s %s: %s", action, path, d.Why()))
	return false
}

// redirect refuses a publish or play with the RTMP redirect convention:
// an error status whose "ex" object carries code 302 and the URL to use,
// as Flash-era servers answer a rejected connect. Clients that understand
// it (custom players, some relays) follow it; others see the error.
func (c *conn) redirect(sc *gortmplib.ServerConn, action pipeline.Action, path, to string) {
	code := "NetStream.Play.Failed"
	if sc.Publish {
		code = "NetStream.Publish.Rejected"
	}
	c.s.m.rejected.With("redirected").Inc()
	c.log.Info("request redirected", "action", action, "to", to)
	_ = c.nc.SetWriteDeadline(time.Now().Add(time.Second))
	_ = sc.Write(&message.CommandAMF0{
		ChunkStreamID:   statusChunkStreamID,
		MessageStreamID: statusStreamID,
		Name:            "onStatus",
		Arguments: []any{
			nil,
			amf0.Object{
				{Key: "level", Value: "error"},
				{Key: "code", Value: code},
				{Key: "description", Value: fmt.Sprintf("%s %s: redirected to %s", action, path, to)},
				{Key: "ex", Value: amf0.Object{
					{Key: "code", Value: float64(302)},
					{Key: "redirect", Value: to},
				}},
			},
		},
	})
}

// notify tells the authorizer a publisher or player left.
func (c *conn) notify(action pipeline.Action, path string, info pipeline.ClientInfo) {
	req := pipeline.AuthRequest{Action: action, Proto: "rtmp", Remote: info.Remote, Path: path, Query: info.Query, Node: c.s.env.Node}
	if opts, ok := c.s.env.Hub.Resolve(path); ok {
		req.Pipeline = opts.Pipeline
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c.s.env.Auth(path).Notify(ctx, req)
}

// refuse answers a publish or play request with an error status, so the
// client reports why, and counts it.
func (c *conn) refuse(sc *gortmplib.ServerConn, reason, desc string) {
	code := "NetStream.Play.StreamNotFound"
	switch {
	case sc.Publish && reason == "busy":
		code = "NetStream.Publish.BadName"
	case sc.Publish && reason == "denied":
		code = "NetStream.Publish.Unauthorized"
	case sc.Publish:
		code = "NetStream.Publish.Rejected"
	case reason == "play_disabled":
		code = "NetStream.Play.Failed"
	}
	c.s.m.rejected.With(reason).Inc()
	c.log.Warn("request refused", "publish", sc.Publish, "reason", desc)
	_ = c.nc.SetWriteDeadline(time.Now().Add(time.Second))
	_ = writeStatus(sc, "error", code, desc)
}

func writeStatus(sc *gortmplib.ServerConn, level, code, desc string) error {
	return sc.Write(&message.CommandAMF0{
		ChunkStreamID:   statusChunkStreamID,
		MessageStreamID: statusStreamID,
		Name:            "onStatus",
		Arguments: []any{
			nil,
			amf0.Object{
				{Key: "level", Value: level},
				{Key: "code", Value: code},
				{Key: "description", Value: desc},
			},
		},
	})
}

// closed logs why a connection ended before it published or played.
func (c *conn) closed(stage string, err error, ctx context.Context) {
	cause := causeOf(ctx, err)
	c.s.m.closed.With(cause).Inc()
	if cause == "protocol_error" || cause == "timeout" {
		c.log.Warn("connection closed during "+stage, "cause", cause, "err", err)
		return
	}
	c.log.Debug("connection closed during "+stage, "cause", cause, "err", err)
}

func causeOf(ctx context.Context, err error) string {
	var ne net.Error
	switch {
	case ctx.Err() != nil:
		return "shutdown"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
		return "client_closed"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, errUnpublished):
		return "unpublished"
	}
	return "protocol_error"
}

// publish runs a publishing session until the client leaves or errs.
func (c *conn) publish(ctx context.Context, sc *gortmplib.ServerConn, path string, info pipeline.ClientInfo) {
	pub, err := c.s.env.Hub.Publish(path, info)
	if err != nil {
		reason := "no_pipeline"
		if errors.Is(err, pipeline.ErrStreamBusy) {
			reason = "busy"
		}
		c.refuse(sc, reason, path+": "+err.Error())
		return
	}
	defer pub.Close()
	defer c.notify(pipeline.ActionUnpublish, path, info)
	if err := sc.AcceptAction(); err != nil {
		c.closed("publish", err, ctx)
		return
	}
	stop := context.AfterFunc(ctx, func() { c.nc.Close() })
	defer stop()
	c.s.m.publishes.Inc()
	start := time.Now()
	c.log.Info("publish started")

	d := demuxer{flvdemux.Demuxer{Sink: pub, Log: c.log}}
	var refresh time.Time
	for {
		// Both directions: the library writes acknowledgements from inside
		// Read, so the handshake's write deadline must not outlive the
		// handshake. Refreshed every half idle period, not every message.
		if now := time.Now(); now.After(refresh) {
			_ = c.nc.SetDeadline(now.Add(c.s.cfg.idle))
			refresh = now.Add(c.s.cfg.idle / 2)
		}
		msg, err := sc.Read()
		if err == nil {
			err = d.handle(msg)
		}
		if err != nil {
			cause := causeOf(ctx, err)
			c.s.m.closed.With(cause).Inc()
			c.s.m.bytesIn.Add(sc.BytesReceived())
			attrs := []any{"cause", cause, "duration", time.Since(start).Round(time.Millisecond), "bytes", sc.BytesReceived(), "units", d.Units()}
			if cause == "protocol_error" || cause == "timeout" {
				c.log.Warn("publish ended", append(attrs, "err", err)...)
			} else {
				c.log.Info("publish ended", attrs...)
			}
			return
		}
	}
}

// play runs a playing session until the client leaves, the stream ends or
// the server stops.
func (c *conn) play(ctx context.Context, sc *gortmplib.ServerConn, path string, info pipeline.ClientInfo) {
	if !c.s.playAllowed() {
		c.refuse(sc, "play_disabled", "RTMP play is disabled on this server")
		return
	}
	// Play waits for a missing publisher; the client is told nothing until
	// the stream is there, then gets Play.Start with media right behind it.
	_ = c.nc.SetDeadline(time.Time{})
	r, err := c.s.env.Hub.Play(ctx, path, info)
	if err != nil {
		reason := "not_found"
		if errors.Is(err, pipeline.ErrNoPipeline) {
			reason = "no_pipeline"
		}
		c.refuse(sc, reason, path+": "+err.Error())
		return
	}
	defer r.Close()
	defer c.notify(pipeline.ActionStop, path, info)
	_ = c.nc.SetWriteDeadline(time.Now().Add(c.s.cfg.write))
	if err := sc.AcceptAction(); err != nil {
		c.closed("play", err, ctx)
		return
	}
	c.s.m.plays.Inc()
	start := time.Now()
	c.log.Info("play started")

	// Players send little after play (acknowledgements, a deleteStream when
	// they leave); it is drained here, and the end of it (the client closing)
	// stops the session. Nothing else reads the connection.
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		// A small buffer on the goroutine's stack: io.Discard would hold
		// an 8 KiB pooled buffer per idle player for the whole session.
		var b [256]byte
		for {
			if _, err := c.nc.Read(b[:]); err != nil {
				break
			}
		}
		cancel()
	}()
	n, err := c.writeMedia(pctx, r)
	n += r.DirectWritten()
	c.s.m.bytesOut.Add(uint64(n))

	cause := causeOf(ctx, err)
	switch {
	case errors.Is(err, pipeline.ErrStreamEnded), ctx.Err() != nil:
		cause = "stream_ended"
		if ctx.Err() != nil {
			cause = "shutdown"
		}
		// Tell the player, so it stops instead of waiting for more.
		_ = c.nc.SetWriteDeadline(time.Now().Add(time.Second))
		_ = sc.Write(&message.UserControlStreamEOF{StreamID: 1})
		_ = writeStatus(sc, "status", "NetStream.Play.UnpublishNotify", path+" ended")
	case errors.Is(err, pipeline.ErrReaderTooSlow):
		cause = "too_slow"
	case pctx.Err() != nil:
		cause = "client_closed"
	}
	c.nc.Close()
	<-drained
	c.s.m.closed.With(cause).Inc()
	attrs := []any{"cause", cause, "duration", time.Since(start).Round(time.Millisecond), "bytes", n}
	if cause == "too_slow" || cause == "timeout" {
		c.log.Warn("play stopped", attrs...)
	} else {
		c.log.Info("play stopped", attrs...)
	}
}

// writeMedia writes the stream to the player: metadata and sequence headers
// first, then batches of shared, pre-serialized messages, one writev each.
func (c *conn) writeMedia(ctx context.Context, r *pipeline.Reader) (int64, error) {
	var (
		total int64
		sent  [2]*pipeline.Track
		iov   = make(net.Buffers, 0, 64)
		// all is what WriteTo consumes; declared once, since a variable
		// declared in the loop escapes (WriteTo has a pointer receiver) and
		// would cost an allocation per write.
		all     net.Buffers
		refresh time.Time
	)
	if md := r.Stream().Metadata(); md != nil {
		iov = append(iov, md.Wire(pipeline.WireRTMP, wire.RTMPMetadataMessage).Bufs...)
	}
	// In latency mode, the stream's writers send the units of a player
	// that keeps up; Next returns the rest.
	r.Direct(c.nc, pipeline.DirectOptions{Format: pipeline.WireRTMP, Encode: wire.RTMPMessage, WriteTimeout: c.s.cfg.write})
	for {
		batch, err := r.Next(ctx)
		if err != nil {
			return total, err
		}
		for _, au := range batch {
			k := au.Track.Kind()
			if sent[k] != au.Track {
				if w := au.Track.Wire(pipeline.WireRTMP, wire.RTMPConfigMessage); w != nil {
					iov = append(iov, w.Bufs...)
				}
				sent[k] = au.Track
			}
			iov = append(iov, au.Wire(pipeline.WireRTMP, wire.RTMPMessage).Bufs...)
		}
		// The deadline is moved every half write timeout, not every batch:
		// a stuck player is still cut after between half and all of it.
		if now := time.Now(); now.After(refresh) {
			_ = c.nc.SetWriteDeadline(now.Add(c.s.cfg.write))
			refresh = now.Add(c.s.cfg.write / 2)
		}
		all = iov
		n, err := all.WriteTo(c.nc)
		total += n
		clear(iov) // drop references to units the ring may recycle
		iov = iov[:0]
		if err != nil {
			return total, err
		}
	}
}
