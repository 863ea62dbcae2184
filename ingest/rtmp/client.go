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
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/bluenviron/gortmplib"
	"github.com/bluenviron/gortmplib/pkg/amf0"
	"github.com/bluenviron/gortmplib/pkg/message"

	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/media/flvdemux"
	"github.com/sluice-media/sluice/pipeline/wire"
)

// ClientOptions configure Pull and Push. The zero value is usable.
type ClientOptions struct {
	// IdleTimeout bounds the connection setup (dial, handshake, connect,
	// and the server's answer to play or publish) and, for Pull, every
	// silence of the upstream after it. pipeline.DefaultIdleTimeout when 0.
	IdleTimeout time.Duration
	// WriteTimeout cuts a Push whose server accepts nothing for this long;
	// 10 s when 0.
	WriteTimeout time.Duration
	// Dial opens the TCP connection; nil uses a net.Dialer. The cluster
	// passes its own to bind a source address or count connections.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// TLS configures rtmps:// connections; nil uses the defaults, with
	// the server name taken from the URL.
	TLS *tls.Config
	// Log receives track changes and codec warnings of a Pull and the
	// session lines of a Push; nil discards them.
	Log *slog.Logger
}

func (o *ClientOptions) idle() time.Duration {
	if o.IdleTimeout > 0 {
		return o.IdleTimeout
	}
	return pipeline.DefaultIdleTimeout
}

func (o *ClientOptions) writeTimeout() time.Duration {
	if o.WriteTimeout > 0 {
		return o.WriteTimeout
	}
	return 10 * time.Second
}

func (o *ClientOptions) log() *slog.Logger {
	if o.Log != nil {
		return o.Log
	}
	return slog.New(slog.DiscardHandler)
}

// Pull plays the stream u names (rtmp://host:port/app/name?query; the
// query goes with the stream name, where servers look for tokens) and
// copies it into the Sink that open returns, until the upstream ends the
// stream, ctx ends, or nothing arrives for o.IdleTimeout. It returns the
// errors listed at pipeline.ErrUpstreamDown.
//
// open is called at the first metadata or media message, not at
// NetStream.Play.Start: servers such as nginx-rtmp start any play at once
// and wait for a publisher, so only media proves that the stream exists,
// and a pull of a stream that is not there never claims the local one.
// What the messages become (tracks, units, metadata) is decided by the
// same demuxer as for RTMP publishers.
func Pull(ctx context.Context, u *url.URL, o ClientOptions, open func() (pipeline.Sink, error)) error {
	c, err := connect(ctx, u, &o, false)
	if err != nil {
		return err
	}
	nc := c.NetConn()
	defer nc.Close()
	// Cancelling ctx closes the socket, which ends a blocked Read.
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	defer stop()

	var (
		sink    pipeline.Sink
		d       demuxer
		counter byteCounter
		counted uint64
		idle    = o.idle()
	)
	for {
		// Both directions: the library answers pings and acknowledges
		// from inside Read.
		_ = nc.SetDeadline(time.Now().Add(idle))
		msg, err := c.Read()
		if err != nil {
			return pullError(ctx, u, readError(err))
		}
		if counter != nil {
			n := c.BytesReceived()
			counter.CountBytes(int64(n - counted))
			counted = n
		}
		switch m := msg.(type) {
		case *message.UserControlStreamEOF:
			// RTMP §7.1.7: playback of the stream is over.
			return nil
		case *message.CommandAMF0:
			if end, err := playStatus(m); end {
				return pullError(ctx, u, err)
			}
			continue
		}
		if sink == nil {
			if !carriesMedia(msg) {
				continue
			}
			if sink, err = open(); err != nil {
				return fmt.Errorf("rtmp pull %s: %w", pipeline.LogURL(u), err)
			}
			d = demuxer{flvdemux.Demuxer{Sink: sink, Log: o.log()}}
			if counter, _ = sink.(byteCounter); counter != nil {
				counted = c.BytesReceived()
				counter.CountBytes(int64(counted))
			}
		}
		if err := d.handle(msg); err != nil {
			return fmt.Errorf("rtmp pull %s: %w", pipeline.LogURL(u), err)
		}
	}
}

// byteCounter is the optional part of a pipeline.Sink that counts bytes.
type byteCounter interface{ CountBytes(n int64) }

// Push publishes a stream to the RTMP server at u
// (rtmp://host:port/app/name?query; the query goes with the stream name,
// where servers look for tokens): it connects, and once the server has
// accepted the publish it calls open for the reader of the stream to send,
// then writes the stream's metadata and each track's sequence header
// first, then the units, until the stream ends, ctx ends, the server goes
// away, or the reader falls too far behind.
//
// open is called at most once, and only after NetStream.Publish.Start:
// a push that cannot connect, or that the server refuses, never holds a
// reader, so a caller that retries holds none between attempts and is
// never a slow reader to be dropped while the server is away. A reader
// opened then starts at the stream's GOP cache, so each new session
// begins with the metadata, the sequence headers and a keyframe. Push owns
// the reader open returns: it finishes it with the session's cause before
// returning, on every path. An error from open ends the push: the server
// is told the publish is over and the error is returned, wrapped.
//
// It returns nil when the stream ended (its publisher left for good) and
// the server was told with deleteStream; ctx.Err() when ctx ended; an
// error wrapping pipeline.ErrReaderTooSlow when the reader was dropped;
// pipeline.ErrUpstreamIdle when the server accepted nothing for
// o.WriteTimeout; and the setup errors of Pull (pipeline.ErrUpstreamDown,
// ErrUpstreamRefused for a refused publish, ErrUpstreamIdle) otherwise.
//
// gortmplib sets the connection up; the media then goes out as the shared
// wire bytes of pipeline/wire, written by pipeline.Play exactly as to an
// RTMP player, rather than through gortmplib's Writer: the units are
// encoded once for every player and every forward of the stream instead
// of once per connection, and batched into one writev. That fits the
// library's connection because the library has announced
// wire.RTMPChunkSize as its chunk size, and the wire bytes use chunk
// streams it never writes after setup with type 0 headers that depend on
// no earlier chunk. What the server sends back (acknowledgements, status)
// is read and discarded by Play; servers that ping (nginx-rtmp) ping only
// connections that send nothing, which a pushing one never is.
func Push(ctx context.Context, u *url.URL, o ClientOptions, open func() (*pipeline.Reader, error)) error {
	c, err := connect(ctx, u, &o, true)
	if err != nil {
		return err
	}
	where := "rtmp push " + pipeline.LogURL(u)
	key := c.URL.Fragment
	// FCUnpublish and deleteStream, as encoders end a publish (ffmpeg's
	// rtmpproto.c), on the command chunk stream the library used for
	// connect: only its writer uses it.
	unpublish := func() error {
		if err := c.Write(&message.CommandAMF0{ChunkStreamID: 3, Name: "FCUnpublish", CommandID: 6, Arguments: []any{nil, key}}); err != nil {
			return err
		}
		return c.Write(&message.CommandAMF0{ChunkStreamID: 3, Name: "deleteStream", CommandID: 7, Arguments: []any{nil, float64(wire.RTMPStreamID)}})
	}
	r, err := open()
	if err != nil {
		nc := c.NetConn()
		_ = nc.SetWriteDeadline(time.Now().Add(time.Second))
		_ = unpublish()
		nc.Close()
		return fmt.Errorf("%s: %w", where, err)
	}
	cause := pipeline.Play(ctx, c.NetConn(), r, pipeline.PlayerOptions{
		Format:       pipeline.WireRTMP,
		Unit:         wire.RTMPMessage,
		Header:       wire.RTMPConfigMessage,
		Metadata:     wire.RTMPMetadataMessage,
		WriteTimeout: o.writeTimeout(),
		Log:          o.log(),
		End:          unpublish,
	})
	switch cause {
	case pipeline.CauseStreamEnded:
		return nil
	case pipeline.CauseShutdown:
		return ctx.Err()
	case pipeline.CauseTooSlow:
		return fmt.Errorf("%s: %w", where, pipeline.ErrReaderTooSlow)
	case pipeline.CauseTimeout:
		return fmt.Errorf("%s: the server accepted nothing for %v: %w", where, o.writeTimeout(), pipeline.ErrUpstreamIdle)
	}
	return fmt.Errorf("%s: the server closed the connection: %w", where, pipeline.ErrUpstreamDown)
}

// connect dials u and runs the handshake, connect, createStream and play
// or publish, all within the idle timeout, and maps what went wrong onto
// the client errors.
func connect(ctx context.Context, u *url.URL, o *ClientOptions, publish bool) (*gortmplib.Client, error) {
	verb := "rtmp pull "
	if publish {
		verb = "rtmp push "
	}
	where := verb + pipeline.LogURL(u)
	lu, err := libURL(u)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	dial := o.Dial
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	ictx, cancel := context.WithTimeoutCause(ctx, o.idle(), pipeline.ErrUpstreamIdle)
	defer cancel()
	// Initialize calls the dialer on this goroutine.
	dialed := false
	c := &gortmplib.Client{URL: lu, Publish: publish, TLSConfig: o.TLS,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			nc, err := dial(ctx, network, addr)
			dialed = err == nil
			return nc, err
		}}
	err = c.Initialize(ictx)
	switch {
	case err == nil:
		return c, nil
	case ctx.Err() != nil:
		return nil, ctx.Err()
	case !dialed:
		// A host that never answers the SYN is as down as one that
		// refuses it.
		return nil, fmt.Errorf("%s: %w: %w", where, pipeline.ErrUpstreamDown, err)
	case errors.Is(context.Cause(ictx), pipeline.ErrUpstreamIdle):
		return nil, fmt.Errorf("%s: no answer within %v: %w", where, o.idle(), pipeline.ErrUpstreamIdle)
	}
	if code, desc, onStatus, ok := badResult(err); ok {
		// The library reports every refusal as "bad result" with the
		// server's command printed in it; the code says which.
		if desc != "" {
			code += ": " + desc
		}
		if onStatus && !publish && !refusedCode(code) {
			return nil, fmt.Errorf("%s: upstream answered %s: %w", where, code, pipeline.ErrStreamNotFound)
		}
		return nil, fmt.Errorf("%s: upstream answered %s: %w", where, code, pipeline.ErrUpstreamRefused)
	}
	return nil, fmt.Errorf("%s: %w: %w", where, pipeline.ErrUpstreamDown, err)
}

// libURL puts u in the form gortmplib expects: the application alone in
// the path (it becomes connect's app and tcUrl) and the stream name in
// the fragment (play's or publish's name), with the query string, where
// servers (nginx-rtmp's on_play, Sluice's auth) look for tokens. A URL
// that already has a fragment is taken to be in that form.
func libURL(u *url.URL) (*url.URL, error) {
	if u.Scheme != "rtmp" && u.Scheme != "rtmps" {
		return nil, fmt.Errorf("%q is not an rtmp:// or rtmps:// URL", u.Scheme+"://"+u.Host)
	}
	if u.Fragment != "" {
		return u, nil
	}
	app, name, _ := strings.Cut(strings.Trim(u.Path, "/"), "/")
	if app == "" || name == "" {
		return nil, errors.New("the URL names no stream; use rtmp://HOST/APP/NAME")
	}
	if u.RawQuery != "" {
		name += "?" + u.RawQuery
	}
	return &url.URL{Scheme: u.Scheme, User: u.User, Host: u.Host, Path: "/" + app, Fragment: name}, nil
}

// The library prints a refusal as "bad result: " and the command with %v:
// &{chunk stream, message stream, name, id, [args]}, an object's entries
// as {key value}.
var (
	resultCode = regexp.MustCompile(`\{code ([^{}\s]+)\}`)
	resultDesc = regexp.MustCompile(`\{description ([^{}]*)\}`)
)

// badResult takes the status code and description out of the library's
// "bad result" error, and whether it answered play or publish (an
// onStatus) rather than connect or createStream.
func badResult(err error) (code, desc string, onStatus, ok bool) {
	s := err.Error()
	i := strings.Index(s, "bad result: ")
	if i < 0 {
		return "", "", false, false
	}
	s = s[i:]
	code = "an error"
	if m := resultCode.FindStringSubmatch(s); m != nil {
		code = m[1]
	}
	if m := resultDesc.FindStringSubmatch(s); m != nil {
		desc = m[1]
	}
	return code, desc, strings.Contains(s, " onStatus "), true
}

// refusedCode reports whether a play's error status says the client is
// not allowed, rather than that the stream is missing.
func refusedCode(code string) bool {
	return strings.Contains(code, "Unauthorized") || strings.Contains(code, "Forbidden") ||
		strings.Contains(code, "Rejected")
}

// playStatus interprets an onStatus the upstream sends during play: end
// reports that the session is over, with nil for the stream's clean end
// (the publisher left: UnpublishNotify; a recording finished: Stop,
// Complete) and an error for an error status.
func playStatus(m *message.CommandAMF0) (end bool, err error) {
	if m.Name != "onStatus" || len(m.Arguments) < 2 {
		return false, nil
	}
	var obj amf0.Object
	switch a := m.Arguments[1].(type) {
	case amf0.Object:
		obj = a
	case amf0.ECMAArray:
		obj = amf0.Object(a)
	default:
		return false, nil
	}
	level, _ := obj.GetString("level")
	code, _ := obj.GetString("code")
	desc, _ := obj.GetString("description")
	switch code {
	case "NetStream.Play.UnpublishNotify", "NetStream.Play.Stop", "NetStream.Play.Complete":
		return true, nil
	}
	if level != "error" {
		return false, nil
	}
	sentinel := pipeline.ErrStreamNotFound
	if refusedCode(code) {
		sentinel = pipeline.ErrUpstreamRefused
	}
	return true, fmt.Errorf("upstream sent %s: %s: %w", code, desc, sentinel)
}

// carriesMedia reports whether msg is stream content: metadata or a media
// message. Servers send data messages of their own at play start (FMS and
// nginx-rtmp send |RtmpSampleAccess), so data counts only when it is
// onMetaData.
func carriesMedia(msg message.Message) bool {
	switch m := msg.(type) {
	case *message.DataAMF0:
		for _, v := range m.Payload {
			if s, ok := v.(string); ok && s == "onMetaData" {
				return true
			}
		}
		return false
	case *message.Video, *message.Audio,
		*message.VideoExSequenceStart, *message.VideoExCodedFrames, *message.VideoExFramesX,
		*message.AudioExSequenceStart, *message.AudioExCodedFrames:
		return true
	}
	return false
}

// readError classifies an error of a read once the session is set up.
func readError(err error) error {
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		return pipeline.ErrUpstreamIdle
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return fmt.Errorf("connection lost: %w: %w", pipeline.ErrUpstreamDown, err)
	}
	return err
}

// pullError adds the URL to err, or returns ctx's error when ctx ended
// (its cancellation closed the socket, which is what err reports).
func pullError(ctx context.Context, u *url.URL, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err == nil {
		return nil
	}
	return fmt.Errorf("rtmp pull %s: %w", pipeline.LogURL(u), err)
}
