package pipeline

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strconv"
	"syscall"
	"time"
)

// Framing wraps each write a player output makes for its transport: HTTP
// chunks for HTTP-FLV, nothing for RTMP (whose chunks are in the wire bytes
// already). It must be a pure function of the size, safe for concurrent use.
type Framing interface {
	// Head appends to dst the bytes that go before a payload of n bytes.
	Head(dst []byte, n int) []byte
	// Tail returns the bytes that go after it; the slice is shared and
	// never modified.
	Tail() []byte
}

// HTTPChunks frames every write as one HTTP/1.1 chunk (RFC 9112 §7.1): the
// size in hex and CRLF, the data, CRLF.
type HTTPChunks struct{}

var crlf = []byte("\r\n")

// Head appends the chunk-size line.
func (HTTPChunks) Head(dst []byte, n int) []byte {
	dst = strconv.AppendInt(dst, int64(n), 16)
	return append(dst, crlf...)
}

// Tail returns the CRLF that ends a chunk.
func (HTTPChunks) Tail() []byte { return crlf }

// HTTPLastChunk ends a chunked body (RFC 9112 §7.1): a player that sees it
// knows the stream is over rather than cut off.
var HTTPLastChunk = []byte("0\r\n\r\n")

// PlayerOptions describe how one player protocol puts a stream on a
// connection. The protocol gives the encoders and the framing; Play does
// the rest the same way for every protocol.
type PlayerOptions struct {
	// Format names the wire format, under which encoded units are cached
	// and shared by every player of the stream.
	Format WireFormat
	// Unit encodes one access unit (AccessUnit.Wire caches the result).
	Unit func(*AccessUnit) *Wire
	// Header encodes a track's sequence header; nil result: none.
	Header func(*Track) *Wire
	// Metadata encodes the stream's metadata; nil: metadata is not sent.
	Metadata func(*Metadata) *Wire
	// Preamble is written once, unframed, before anything else (an HTTP
	// response head).
	Preamble []byte
	// Lead is written, framed, before the metadata (an FLV file header).
	Lead []byte
	// Framing wraps each write; nil writes the bytes as they are.
	Framing Framing
	// WriteTimeout cuts a player whose socket accepts nothing for this long.
	WriteTimeout time.Duration
	// End tells the player that the stream ended or the server is stopping
	// (RTMP UnpublishNotify, the last HTTP chunk). It is called with a
	// short write deadline set, and may be nil.
	End func() error
	// Log is the session's logger (stream, remote, proto already set).
	Log *slog.Logger
}

// Causes a play session ends with, as Play reports them.
const (
	CauseClientClosed = "client_closed" // the player closed or reset the connection
	CauseStreamEnded  = "stream_ended"  // the publisher left for good
	CauseShutdown     = "shutdown"      // the stage or the server stopped
	CauseTooSlow      = "too_slow"      // dropped by the lag rules
	CauseTimeout      = "timeout"       // the socket accepted nothing for WriteTimeout
)

// Play writes r's stream to conn until the player leaves, the stream ends,
// the player falls too far behind, or ctx ends (the stage stopping): the
// preamble, then the lead, the metadata and each track's sequence header,
// then batches of shared, pre-serialized units, each batch one framed
// writev. A player that keeps up is written by the stream's own writers
// (see Reader.Direct).
//
// Play owns conn's read side from the start: a goroutine drains what the
// player sends (acknowledgements, nothing at all) so that its closing ends
// the session at once. Play closes conn, waits for that goroutine, finishes
// r with the cause, logs the end of the session and returns the cause.
//
// An operator's kick (Gate.Kick) ends the session as the stage stopping
// would, but cuts the player rather than telling it the stream ended.
func Play(ctx context.Context, conn net.Conn, r *Reader, o PlayerOptions) string {
	start := time.Now()
	o.Log.Info("play started")
	// kctx ends with the stage or with a kick; pctx also when the player
	// leaves.
	kctx, kick := context.WithCancel(ctx)
	defer kick()
	unhook := r.OnKick(kick)
	defer unhook()
	pctx, cancel := context.WithCancel(kctx)
	defer cancel()
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		// A small buffer on the goroutine's stack: io.Discard would hold
		// an 8 KiB pooled buffer per idle player for the whole session.
		var b [256]byte
		for {
			if _, err := conn.Read(b[:]); err != nil {
				break
			}
		}
		cancel()
	}()

	// A write blocked on a player that stopped reading (or a dead link)
	// must not hold up the stage's stop until the write timeout: ending
	// ctx pulls the deadline in.
	cut := context.AfterFunc(kctx, func() { _ = conn.SetWriteDeadline(time.Now()) })
	pw := &playWriter{conn: conn, r: r, o: o, stop: kctx}
	err := pw.run(pctx)
	cut()
	n := pw.total + r.DirectWritten()
	r.sess.hookDirect(nil)
	r.CountBytes(r.DirectWritten())

	cause := CauseClientClosed
	var ne net.Error
	switch {
	case errors.Is(err, ErrReaderTooSlow):
		cause = CauseTooSlow
	case r.KickCause() != "":
		cause = r.KickCause()
	case ctx.Err() != nil, stageDone(ctx):
		// The stage stopping also ends the streams (the hub closes), and
		// its cancellation may reach ctx a moment after that: the stage's
		// own context, kept on HTTP requests, decides.
		cause = CauseShutdown
	case errors.Is(err, ErrStreamEnded):
		cause = CauseStreamEnded
	case pctx.Err() != nil:
		cause = CauseClientClosed
	case errors.As(err, &ne) && ne.Timeout():
		cause = CauseTimeout
	}
	if (cause == CauseStreamEnded || cause == CauseShutdown) && o.End != nil {
		_ = conn.SetWriteDeadline(time.Now().Add(time.Second))
		_ = o.End()
	}
	conn.Close()
	<-drained
	r.Finish(cause)
	attrs := []any{"cause", cause, "duration", time.Since(start).Round(time.Millisecond), "bytes", n}
	if cause == CauseTooSlow || cause == CauseTimeout {
		o.Log.Warn("play stopped", attrs...)
	} else {
		o.Log.Info("play stopped", attrs...)
	}
	return cause
}

// IsClientGone reports whether err is what a write to a player that left
// returns, so that callers do not log it as a failure.
func IsClientGone(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET)
}

// playWriter is the write loop of one player.
type playWriter struct {
	conn  net.Conn
	r     *Reader
	o     PlayerOptions
	total int64

	iov  net.Buffers
	head []byte
	// all is what WriteTo consumes; a field, since a local declared in the
	// loop escapes (WriteTo has a pointer receiver) and would cost an
	// allocation per write.
	all     net.Buffers
	refresh time.Time
	stop    context.Context // the stage's: once it ends, no deadline is pushed back
}

func (w *playWriter) run(ctx context.Context) error {
	o, r := w.o, w.r
	if len(o.Preamble) > 0 {
		_ = w.conn.SetWriteDeadline(time.Now().Add(o.WriteTimeout))
		n, err := w.conn.Write(o.Preamble)
		w.total += int64(n)
		if err != nil {
			return err
		}
	}
	w.iov = make(net.Buffers, 1, 64) // iov[0] is the frame head
	w.head = make([]byte, 0, 18)
	if len(o.Lead) > 0 {
		w.iov = append(w.iov, o.Lead)
	}
	if md := r.Stream().Metadata(); md != nil && o.Metadata != nil {
		if mw := md.Wire(o.Format, o.Metadata); mw != nil {
			w.iov = append(w.iov, mw.Bufs...)
		}
	}
	r.Direct(w.conn, DirectOptions{Format: o.Format, Encode: o.Unit, Framing: o.Framing, WriteTimeout: o.WriteTimeout})
	var sent [numKinds]*Track
	for {
		batch, err := r.Next(ctx)
		if err != nil {
			return err
		}
		for _, au := range batch {
			k := au.Track.Kind()
			if sent[k] != au.Track {
				if o.Header != nil {
					if hw := au.Track.Wire(o.Format, o.Header); hw != nil {
						w.iov = append(w.iov, hw.Bufs...)
					}
				}
				sent[k] = au.Track
			}
			w.iov = append(w.iov, au.Wire(o.Format, o.Unit).Bufs...)
			if len(w.iov) >= maxPlayIOV {
				// A long batch (a start from the GOP cache, a catch-up)
				// goes out in several writes, so that neither iov nor
				// the socket's own iovec cache, which each connection
				// keeps at the size of its largest write, grow for good.
				if err := w.flush(); err != nil {
					return err
				}
			}
		}
		if err := w.flush(); err != nil {
			return err
		}
	}
}

// maxPlayIOV is about the most buffers one write of a player carries
// (iov's capacity, less room for a framing tail).
const maxPlayIOV = 60

// flush writes iov[1:] as one framed writev; nothing when it is empty.
func (w *playWriter) flush() error {
	if len(w.iov) == 1 {
		return nil
	}
	w.all = w.iov[1:]
	if f := w.o.Framing; f != nil {
		size := 0
		for _, b := range w.all {
			size += len(b)
		}
		w.head = f.Head(w.head[:0], size)
		w.iov[0] = w.head
		w.iov = append(w.iov, f.Tail())
		w.all = w.iov
	}
	// The deadline is moved every half write timeout, not every batch: a
	// stuck player is still cut after between half and all of it.
	if now := time.Now(); now.After(w.refresh) {
		_ = w.conn.SetWriteDeadline(now.Add(w.o.WriteTimeout))
		w.refresh = now.Add(w.o.WriteTimeout / 2)
		if w.stop.Err() != nil {
			// The stage stopped while the deadline moved: pull it back in.
			_ = w.conn.SetWriteDeadline(time.Now())
		}
	}
	n, err := w.all.WriteTo(w.conn)
	w.total += n
	w.r.CountBytes(n)
	clear(w.iov) // drop references to units the ring may recycle
	w.iov = w.iov[:1]
	return err
}
