package rtmp

import (
	"context"
	"crypto/tls"
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
	// g reads the client's bytes for the library, within the limits.
	g *guard
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
	if tc, ok := c.nc.(*tls.Conn); ok {
		// RTMPS: the TLS handshake on its own first, so that a client
		// refused there (TLS older than 1.2, no shared cipher) is logged
		// as such rather than as a broken RTMP handshake.
		if err := tc.HandshakeContext(ctx); err != nil {
			stop()
			c.closed("TLS handshake", err, ctx)
			return
		}
	}
	l := c.s.env.Gate.Limits()
	c.g = newGuard(c.nc, guardLimits{chunkSize: l.RTMPMaxChunkSize, messageSize: l.RTMPMaxMessageSize,
		amfDepth: l.AMFMaxDepth, amfString: l.AMFMaxString}, c.s.env.Gate.CountLimit)
	sc := &gortmplib.ServerConn{RW: c.g}
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
	c.log = c.log.With("stream", path)
	req := pipeline.Request{Path: path, Client: pipeline.ClientInfo{Proto: "rtmp", Remote: c.nc.RemoteAddr().String(), Query: query}}
	if sc.Publish {
		c.publish(ctx, sc, req)
	} else {
		c.play(ctx, sc, req)
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
			// Either part may be empty ("live?" or "key?"): no stray "&".
			if kq := key[j+1:]; kq != "" && query != "" {
				query += "&" + kq
			} else if kq != "" {
				query = kq
			}
			key = key[:j]
		}
		path += "/" + key
	}
	return path, query
}

// redirect refuses a publish or play with the RTMP redirect convention:
// an error status whose "ex" object carries code 302 and the URL to use,
// as Flash-era servers answer a rejected connect. Clients that understand
// it (custom players, some relays) follow it; others see the error.
func (c *conn) redirect(sc *gortmplib.ServerConn, path, to string) {
	code := "NetStream.Play.Failed"
	if sc.Publish {
		code = "NetStream.Publish.Rejected"
	}
	c.log.Info("request redirected", "publish", sc.Publish, "to", to)
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
				{Key: "description", Value: fmt.Sprintf("%s: redirected to %s", path, to)},
				{Key: "ex", Value: amf0.Object{
					{Key: "code", Value: float64(302)},
					{Key: "redirect", Value: to},
				}},
			},
		},
	})
}

// refuse answers a refused publish or play with an error status, so that
// the client reports why (or, for a redirect, where to go: the refusal's
// Redirect, or its RTMP base followed by the request's path and query, so
// that a token survives the redirect).
func (c *conn) refuse(sc *gortmplib.ServerConn, req pipeline.Request, r *pipeline.Refusal) {
	path := req.Path
	if r.Reason == pipeline.ReasonRedirected {
		to := r.Redirect
		if base := r.RedirectBase["rtmp"]; to == "" && base != "" {
			to = strings.TrimSuffix(base, "/") + "/" + path
			if req.Client.Query != "" {
				to += "?" + req.Client.Query
			}
		}
		if to != "" {
			c.redirect(sc, path, to)
			return
		}
		// Sent elsewhere, but with no RTMP address to go to: the client
		// can only be told it failed.
	}
	c.log.Warn("request refused", "publish", sc.Publish, "reason", r.Reason, "err", r.Err)
	_ = c.nc.SetWriteDeadline(time.Now().Add(time.Second))
	_ = writeStatus(sc, "error", statusCode(r.Reason, sc.Publish), r.Error())
}

// statusCode is the one mapping from a refusal's reason to the RTMP
// onStatus code clients understand.
func statusCode(reason string, publish bool) string {
	switch {
	case publish && (reason == pipeline.ReasonBusy || reason == pipeline.ReasonStopped):
		// The name cannot be published now, because another publisher
		// holds it or an operator stopped it: the same code for both,
		// the one clients know for a name they cannot use.
		return "NetStream.Publish.BadName"
	case publish && reason == pipeline.ReasonDenied:
		return "NetStream.Publish.Unauthorized"
	case publish:
		return "NetStream.Publish.Rejected"
	case reason == pipeline.ReasonNotFound, reason == pipeline.ReasonNoPipeline, reason == pipeline.ReasonBadPath:
		return "NetStream.Play.StreamNotFound"
	case reason == pipeline.ReasonDenied:
		// Not a standard code, but an error status all the same for a
		// player; a relay (another Sluice's edge) reads "Unauthorized" as
		// a refusal rather than a missing stream, and tells its players so.
		return "NetStream.Play.Unauthorized"
	}
	return "NetStream.Play.Failed"
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
	err = c.readErr(err)
	cause := causeOf(ctx, err)
	c.s.m.closed.With(cause).Inc()
	if (cause == "protocol_error" || cause == "timeout" || cause == "limit") && c.s.env.Gate.LogOnce("rtmp "+cause, c.nc.RemoteAddr().String()) {
		// Once a minute per client address and cause: a client that
		// opens a thousand connections and lets each time out is one
		// line, and sluice_rtmp_closed_total{cause} counts them all.
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
	case errors.As(err, new(*pipeline.LimitError)):
		return "limit"
	}
	return "protocol_error"
}

// readErr returns the guard's error when the library failed because the
// guard refused a read, whatever the library made of it: the guard's says
// which limit the client passed.
func (c *conn) readErr(err error) error {
	if c.g != nil && c.g.Err() != nil {
		return c.g.Err()
	}
	return err
}

// publish runs a publishing session until the client leaves or errs.
func (c *conn) publish(ctx context.Context, sc *gortmplib.ServerConn, req pipeline.Request) {
	pub, err := c.s.env.Gate.Publish(ctx, req)
	if err != nil {
		c.refuse(sc, req, pipeline.RefusalOf(err))
		return
	}
	var cause string
	defer func() { pub.Finish(cause) }()
	if err := sc.AcceptAction(); err != nil {
		cause = causeOf(ctx, err)
		c.log.Debug("connection closed before publishing", "cause", cause, "err", err)
		return
	}
	stop := context.AfterFunc(ctx, func() { c.nc.Close() })
	defer stop()
	unkick := pub.OnKick(func() { c.nc.Close() })
	defer unkick()
	start := time.Now()
	c.log.Info("publish started")

	pub.PaceReads(c.nc)
	d := demuxer{flvdemux.Demuxer{Sink: pub, Log: c.log}}
	var refresh time.Time
	var counted uint64
	for {
		// Both directions: the library writes acknowledgements from inside
		// Read, so the handshake's write deadline must not outlive the
		// handshake. Refreshed every half idle period, not every message;
		// the byte count is brought up to date at the same pace.
		if now := time.Now(); now.After(refresh) {
			_ = c.nc.SetDeadline(now.Add(c.s.cfg.idle))
			refresh = now.Add(c.s.cfg.idle / 2)
			n := sc.BytesReceived()
			pub.CountBytes(int64(n - counted))
			counted = n
		}
		msg, err := sc.Read()
		if err == nil {
			err = d.handle(msg)
		}
		if err != nil {
			err = c.readErr(err)
			cause = causeOf(ctx, err)
			if k := pub.KickCause(); k != "" {
				cause = k
			}
			pub.CountBytes(int64(sc.BytesReceived() - counted))
			attrs := []any{"cause", cause, "duration", time.Since(start).Round(time.Millisecond), "bytes", sc.BytesReceived(), "units", d.Units()}
			if cause == "protocol_error" || cause == "timeout" || cause == "limit" {
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
func (c *conn) play(ctx context.Context, sc *gortmplib.ServerConn, req pipeline.Request) {
	if !c.s.playAllowed() {
		c.refuse(sc, req, pipeline.Refuse(pipeline.ReasonRefused, errors.New("RTMP play is disabled on this server")))
		return
	}
	// Play waits for a missing publisher; the client is told nothing until
	// the stream is there, then gets Play.Start with media right behind it.
	_ = c.nc.SetDeadline(time.Time{})
	r, err := c.s.env.Gate.Play(ctx, req)
	if err != nil {
		c.refuse(sc, req, pipeline.RefusalOf(err))
		return
	}
	defer r.Close()
	_ = c.nc.SetWriteDeadline(time.Now().Add(c.s.cfg.write))
	if err := sc.AcceptAction(); err != nil {
		r.Finish(causeOf(ctx, err))
		return
	}
	pipeline.Play(ctx, c.nc, r, pipeline.PlayerOptions{
		Format:       pipeline.WireRTMP,
		Unit:         wire.RTMPMessage,
		Header:       wire.RTMPConfigMessage,
		Metadata:     wire.RTMPMetadataMessage,
		WriteTimeout: c.s.cfg.write,
		Log:          c.log,
		End: func() error {
			// Tell the player, so it stops instead of waiting for more.
			if err := sc.Write(&message.UserControlStreamEOF{StreamID: 1}); err != nil {
				return err
			}
			return writeStatus(sc, "status", "NetStream.Play.UnpublishNotify", req.Path+" ended")
		},
	})
}
