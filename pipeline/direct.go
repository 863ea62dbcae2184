package pipeline

import (
	"context"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Direct writing (see the package doc). A reader that has
// caught up parks on its own channel, and the stream's writers put each new
// unit's shared wire bytes on its socket with one non-blocking writev. The
// reader's goroutine takes over again, and nothing else touches the socket,
// whenever a writer cannot finish: the socket is full, a track changed, the
// reader lags, or the stream ended.

// maxDirectIOV bounds one direct writev; a reader with more to send than
// that goes back to its goroutine, which writes in batches.
const maxDirectIOV = 256

// DirectOptions describe how a player's connection frames the units a
// stream's writers put on it directly.
type DirectOptions struct {
	// Format and Encode give the bytes of one unit, as the output writes
	// them itself (AccessUnit.Wire).
	Format WireFormat
	Encode func(*AccessUnit) *Wire
	// Framing wraps every write for the transport; nil writes the bytes
	// as they are.
	Framing Framing
	// WriteTimeout is the deadline the reader's goroutine sets when it
	// takes the connection back, so that a player that stopped reading is
	// still cut after it.
	WriteTimeout time.Duration
}

// direct is a reader's state for direct writing. mu is held by a writer for
// the whole of its attempt; while parked is set, the writers own the socket,
// the reader's cursor and pending, and the goroutine waits on wake.
type direct struct {
	conn  net.Conn
	raw   syscall.RawConn
	opts  DirectOptions
	shard *directShard

	mu      sync.Mutex
	parked  bool
	pending net.Buffers // bytes a writer could not finish, in order
	keep    [][]byte    // pending's storage
	size    []byte      // the frame head of the last write
	wake    chan struct{}
	written atomic.Int64
}

// directWriters are a stream's writer goroutines, one per shard of its
// direct readers, started by the first direct reader and stopped when the
// stream ends.
type directWriters struct {
	// mu orders starting the writers with the stream's end waiting for
	// them: once the stream is done, none starts (a WaitGroup must not
	// grow while it is waited on).
	mu     sync.Mutex
	once   sync.Once
	wg     sync.WaitGroup // the writer goroutines; the stream's end waits for them
	shards []*directShard
	next   atomic.Uint32
	active atomic.Int64
}

type directShard struct {
	s       *Stream
	kick    chan struct{}
	mu      sync.Mutex // serializes changes to readers
	readers atomic.Pointer[[]*Reader]

	// Scratch of the one goroutine that serves the shard.
	bufs [][]byte
	vecs iovecs
	n    int
	err  syscall.Errno
	fn   func(fd uintptr)
}

// Direct lets the stream's writers write the reader's units straight to conn
// while the reader keeps up, instead of waking the reader's goroutine for
// each of them. It applies to a connection that exposes its file
// descriptor (on Linux), and reports whether it does. Call it once, before the
// first Next.
//
// With Direct on, Next returns only what the writers left: the goroutine
// writes what Next returns exactly as before (sequence headers for a new
// track included), and Next itself writes, with conn, any bytes a writer
// could only partly send. DirectWritten counts the bytes written for it.
func (r *Reader) Direct(conn net.Conn, o DirectOptions) bool {
	s := r.s
	if !directSupported || r.d != nil || o.Encode == nil {
		return false
	}
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	w := &s.direct
	w.mu.Lock()
	if isClosed(s.done) {
		w.mu.Unlock()
		return false // the stream has ended; Next says so
	}
	w.once.Do(func() { s.startWriters() })
	w.mu.Unlock()
	sh := w.shards[int(w.next.Add(1))%len(w.shards)]
	r.d = &direct{conn: conn, raw: raw, opts: o, shard: sh, wake: make(chan struct{}, 1), size: make([]byte, 0, 18)}
	sh.mu.Lock()
	old := *sh.readers.Load()
	list := make([]*Reader, len(old), len(old)+1)
	copy(list, old)
	list = append(list, r)
	sh.readers.Store(&list)
	sh.mu.Unlock()
	w.active.Add(1)
	r.sess.hookDirect(&r.d.written)
	return true
}

// DirectWritten returns how many bytes were written to the reader's
// connection outside what Next returned.
func (r *Reader) DirectWritten() int64 {
	if r.d == nil {
		return 0
	}
	return r.d.written.Load()
}

// leaveDirect takes the reader out of its shard; the caller no longer
// reads. After it, no writer touches the connection.
func (r *Reader) leaveDirect() {
	d := r.d
	d.mu.Lock()
	d.parked = false
	d.mu.Unlock()
	sh := d.shard
	sh.mu.Lock()
	old := *sh.readers.Load()
	list := make([]*Reader, 0, len(old))
	for _, x := range old {
		if x != r {
			list = append(list, x)
		}
	}
	sh.readers.Store(&list)
	sh.mu.Unlock()
	r.s.direct.active.Add(-1)
}

// stopWriters waits for the stream's writers, which return once the
// stream is done. Called after done is closed: taking mu once makes any
// Direct that started writers before it finish doing so, and any later
// one see done and start none.
func (s *Stream) stopWriters() {
	w := &s.direct
	w.mu.Lock()
	w.mu.Unlock()
	w.wg.Wait()
}

func (s *Stream) startWriters() {
	n := max(runtime.GOMAXPROCS(0), 1)
	w := &s.direct
	w.shards = make([]*directShard, n)
	for i := range w.shards {
		sh := &directShard{s: s, kick: make(chan struct{}, 1)}
		empty := []*Reader{}
		sh.readers.Store(&empty)
		sh.fn = sh.writev
		w.shards[i] = sh
		w.wg.Go(sh.run)
	}
}

// kickDirect tells the writers that units were added. The publisher calls it
// whenever it wakes the readers: after each unit in latency mode, once per
// merge window or burst in throughput mode.
func (s *Stream) kickDirect() {
	if s.direct.active.Load() == 0 {
		return
	}
	for _, sh := range s.direct.shards {
		if len(*sh.readers.Load()) == 0 {
			continue
		}
		select {
		case sh.kick <- struct{}{}:
		default:
		}
	}
}

func (sh *directShard) run() {
	s := sh.s
	for {
		select {
		case <-sh.kick:
		case <-s.done:
			return
		}
		for _, r := range *sh.readers.Load() {
			sh.serve(r)
		}
	}
}

// serve writes what r is missing if r is parked, or hands r back to its
// goroutine when that cannot be done in one non-blocking write.
func (sh *directShard) serve(r *Reader) {
	d := r.d
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.parked {
		return
	}
	s := r.s
	head := s.ring.head.Load()
	if r.cursor >= head {
		return
	}
	if r.behind(head) || isClosed(s.done) {
		d.handBack()
		return
	}
	bufs := sh.bufs[:0]
	framing := d.opts.Framing
	if framing != nil {
		bufs = append(bufs, nil) // the frame head, filled below
	}
	total := 0
	c := r.cursor
	for ; c < head; c++ {
		au := s.ring.get(c)
		if au == nil || au.Track != r.sent[au.Track.Kind()] {
			// Lapped, or a new track whose sequence header the
			// goroutine must send first.
			sh.bufs = clearBufs(bufs)
			d.handBack()
			return
		}
		w := au.Wire(d.opts.Format, d.opts.Encode)
		if len(bufs)+len(w.Bufs)+1 > maxDirectIOV {
			sh.bufs = clearBufs(bufs)
			d.handBack()
			return
		}
		bufs = append(bufs, w.Bufs...)
		total += w.Len
	}
	if framing != nil {
		d.size = framing.Head(d.size[:0], total)
		tail := framing.Tail()
		bufs[0] = d.size
		bufs = append(bufs, tail)
		total += len(d.size) + len(tail)
	}
	n := sh.write(d, bufs)
	if n > 0 {
		d.written.Add(int64(n))
		r.seek(c)
	}
	if n < total {
		if n > 0 {
			d.keepRest(bufs, n)
		}
		d.handBack()
	}
	sh.bufs = clearBufs(bufs)
}

func clearBufs(b [][]byte) [][]byte {
	clear(b)
	return b[:0]
}

// keepRest stores what is left of bufs after the first n bytes as the
// pending bytes the goroutine writes first. The pieces are shared wire
// bytes, which are never modified, or d.size, which no writer touches until
// the goroutine has written them.
func (d *direct) keepRest(bufs [][]byte, n int) {
	keep := d.keep[:0]
	for _, b := range bufs {
		if n >= len(b) {
			n -= len(b)
			continue
		}
		keep = append(keep, b[n:])
		n = 0
	}
	d.keep = keep
	d.pending = keep
}

// handBack returns the socket to the reader's goroutine. d.mu is held.
func (d *direct) handBack() {
	d.parked = false
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// park waits, for a reader that has caught up, until the writers hand the
// socket back, the stream ends or ctx ends. It returns with the socket
// owned by the goroutine, having written what a writer left unfinished.
func (r *Reader) park(ctx context.Context) error {
	d, s := r.d, r.s
	d.mu.Lock()
	if r.cursor < s.ring.head.Load() || isClosed(s.done) {
		d.mu.Unlock()
		return nil
	}
	d.parked = true
	d.mu.Unlock()
	for {
		select {
		case <-d.wake:
		case <-s.done:
		case <-ctx.Done():
		}
		d.mu.Lock()
		if d.parked && ctx.Err() == nil && !isClosed(s.done) {
			d.mu.Unlock() // a stale wake-up
			continue
		}
		d.parked = false
		pending := d.pending
		d.pending = nil
		d.mu.Unlock()
		if err := ctx.Err(); err != nil {
			return err
		}
		_ = d.conn.SetWriteDeadline(time.Now().Add(d.opts.WriteTimeout))
		if len(pending) > 0 {
			n, err := pending.WriteTo(d.conn)
			d.written.Add(n)
			clear(d.keep)
			if err != nil {
				return err
			}
		}
		return nil
	}
}
