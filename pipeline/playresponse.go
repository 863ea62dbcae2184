package pipeline

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// PlayResponse is Play for an HTTP response that cannot be hijacked: an
// HTTP/2 stream, one of many that share a TCP connection (RFC 9113 §5), as
// an edge's pulls from an origin do over cleartext HTTP/2. It answers 200
// with the headers already set on w, sends the head at once (so the client
// knows it was admitted before the first unit), and then plays rd into the
// response body exactly as Play does on a socket: same batches, same
// shared wire bytes, same lag rules, same causes and counters.
//
// Three of o's fields are HTTP/1.1 matters and are ignored: there is no
// Preamble (the head is w's), no Framing (HTTP/2 frames the body itself,
// RFC 9113 §6.1) and no End (returning from the handler ends the stream
// with END_STREAM, which tells the client the stream is over, as the last
// chunk does in HTTP/1.1). Latency mode's direct writes do not apply: the
// stream's writers need a socket of the reader's own.
//
// o.WriteTimeout cuts a client that accepts nothing for that long, by
// resetting its stream (RST_STREAM); the connection and its other streams
// carry on. The client leaving (its stream reset, its connection gone) ends
// the session as client_closed; the stage stopping (r's context ending with
// ErrStageStopped) ends it as shutdown.
//
// PlayResponse returns the cause when the stream ended cleanly (the
// publisher left, the stage stopped, the client left). When the session
// was cut (too_slow, timeout, kicked), it does not return: it panics with
// http.ErrAbortHandler, net/http's way of resetting the stream (on HTTP/1.1,
// closing the connection before the last chunk) without logging, so that
// the client sees a stream cut short rather than one that ended. The
// caller's deferred calls run as usual. Call it from the handler's
// goroutine, once, after Gate.Play admitted the client.
func PlayResponse(w http.ResponseWriter, r *http.Request, rd *Reader, o PlayerOptions) string {
	c := newResponseConn(w, r)
	o.Preamble, o.Framing, o.End = nil, flushAtEnd{}, nil
	w.WriteHeader(http.StatusOK)
	_ = c.rc.Flush() // a failure shows in the first write
	cause := Play(c.stage, c, rd, o)
	if cause == CauseTooSlow || cause == CauseTimeout || cause == CauseKicked {
		panic(http.ErrAbortHandler)
	}
	return cause
}

// flushAtEnd frames nothing: HTTP/2 frames the body itself. Its empty Tail
// is the end of every batch Play writes, the moment a responseConn flushes,
// so that a batch leaves as one flush rather than one per piece (an FLV tag
// is three), each of which costs a hand-off to the connection's writer
// goroutine and a DATA frame header.
type flushAtEnd struct{}

func (flushAtEnd) Head(dst []byte, _ int) []byte { return dst }

func (flushAtEnd) Tail() []byte { return batchEnd }

var batchEnd = []byte{}

// aLongTimeAgo is a write deadline in the past: it fails a write at once.
var aLongTimeAgo = time.Unix(1, 0)

// responseConn makes an HTTP response look like the net.Conn Play writes
// to. Write, SetWriteDeadline and Close are called from Play's goroutine,
// Read from its drain goroutine.
type responseConn struct {
	w      http.ResponseWriter
	rc     *http.ResponseController
	client context.Context // r's: ends when the client goes, or its stage stops
	stage  context.Context // ends only when the stage stops: what Play runs under
	cancel context.CancelCauseFunc
	unhook func() bool
	local  net.Addr
	remote net.Addr

	closed    chan struct{}
	closeOnce sync.Once

	// deadline is the write deadline in Unix nanoseconds, 0 for none:
	// Play's goroutine sets it, and so does the stage stopping (Play's
	// cut), from another.
	deadline atomic.Int64
	// Play's goroutine only.
	dirty bool // written since the last flush

	// The write watchdog runs while a write is in progress and resets the
	// stream if the deadline passes first. It is not the stream's own
	// write deadline (ResponseController.SetWriteDeadline) because that
	// one fires even while nothing is being written, and a player idle
	// for longer than the write timeout (a publisher pausing) is fine.
	watchdog *time.Timer
	mu       sync.Mutex // serializes the watchdog with Close
	done     bool       // Close was called: the response is no longer ours
	expired  atomic.Bool
}

func newResponseConn(w http.ResponseWriter, r *http.Request) *responseConn {
	client := r.Context()
	// Over HTTP/2 the request's context ends when the client goes as well
	// as when the stage stops. Play must tell the two apart (client_closed
	// or shutdown), so it runs under a context that ends only with the
	// stage, and learns of the client from Read.
	stage, cancel := context.WithCancelCause(context.WithoutCancel(client))
	unhook := context.AfterFunc(client, func() {
		if Stopped(client) {
			cancel(ErrStageStopped)
		}
	})
	local, _ := client.Value(http.LocalAddrContextKey).(net.Addr)
	if local == nil {
		local = httpAddr("")
	}
	c := &responseConn{
		w: w, rc: http.NewResponseController(w),
		client: client, stage: stage, cancel: cancel, unhook: unhook,
		local: local, remote: httpAddr(r.RemoteAddr),
		closed: make(chan struct{}),
	}
	c.watchdog = time.AfterFunc(time.Hour, c.expire)
	c.watchdog.Stop()
	return c
}

// Write buffers p in the response; an empty Write (the Tail of
// flushAtEnd) flushes what was buffered.
func (c *responseConn) Write(p []byte) (int, error) {
	if len(p) == 0 {
		if !c.dirty {
			return 0, nil
		}
		c.dirty = false
		if err := c.arm(); err != nil {
			return 0, err
		}
		return 0, c.disarm(c.rc.Flush())
	}
	if err := c.arm(); err != nil {
		return 0, err
	}
	c.dirty = true
	n, err := c.w.Write(p)
	return n, c.disarm(err)
}

// arm starts the watchdog for one write. A write after the deadline
// fails at once, as on a socket.
func (c *responseConn) arm() error {
	dl := c.deadline.Load()
	if dl == 0 {
		return nil
	}
	d := time.Until(time.Unix(0, dl))
	if d <= 0 {
		c.expire()
		return c.timeout(nil)
	}
	c.watchdog.Reset(d)
	return nil
}

// disarm stops the watchdog after a write and makes err a timeout when
// the watchdog cut the write.
func (c *responseConn) disarm(err error) error {
	if c.deadline.Load() != 0 {
		c.watchdog.Stop()
	}
	if err != nil && c.expired.Load() {
		return c.timeout(err)
	}
	return err
}

// timeout wraps err so that Play sees a timeout, as a socket's
// deadline error is one (net.Error.Timeout).
func (c *responseConn) timeout(err error) error {
	if err == nil {
		return fmt.Errorf("http response write: %w", os.ErrDeadlineExceeded)
	}
	return fmt.Errorf("http response write: %w: %w", os.ErrDeadlineExceeded, err)
}

// expire cuts the response: a write deadline in the past resets an HTTP/2
// stream at once (ending the write that waits on flow control) and fails
// an HTTP/1.1 socket write.
func (c *responseConn) expire() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done {
		return
	}
	c.expired.Store(true)
	_ = c.rc.SetWriteDeadline(aLongTimeAgo)
}

// Read blocks until the client goes or Close is called, then returns
// io.EOF, which is how Play's drain goroutine learns that a player left.
// The request's context also ends when the stage stops (Play sees that
// from its own context) and when the watchdog reset the stream (the write
// reports that): then Read waits for Close, so that Play names the cause.
func (c *responseConn) Read([]byte) (int, error) {
	select {
	case <-c.client.Done():
		if c.expired.Load() || Stopped(c.client) {
			<-c.closed
		}
	case <-c.closed:
	}
	return 0, io.EOF
}

// Close ends Read and the stage context. It does not end the response:
// returning from the handler does.
func (c *responseConn) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.done = true
		c.mu.Unlock()
		c.watchdog.Stop()
		c.unhook()
		c.cancel(nil)
		close(c.closed)
	})
	return nil
}

func (c *responseConn) LocalAddr() net.Addr  { return c.local }
func (c *responseConn) RemoteAddr() net.Addr { return c.remote }

// SetDeadline sets the write deadline; reads have none to set.
func (c *responseConn) SetDeadline(t time.Time) error { return c.SetWriteDeadline(t) }

func (c *responseConn) SetReadDeadline(time.Time) error { return nil }

// SetWriteDeadline sets the deadline the watchdog enforces on each write.
func (c *responseConn) SetWriteDeadline(t time.Time) error {
	var ns int64
	if !t.IsZero() {
		ns = t.UnixNano()
	}
	c.deadline.Store(ns)
	return nil
}

// httpAddr is an address as net/http gives it, "host:port".
type httpAddr string

func (a httpAddr) Network() string { return "tcp" }
func (a httpAddr) String() string  { return string(a) }

var (
	_ net.Conn = (*responseConn)(nil)
	_ Framing  = flushAtEnd{}
)
