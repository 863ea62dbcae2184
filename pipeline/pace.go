package pipeline

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"time"
)

// Paced reads: a publisher of a throughput-mode stream need not be read as
// each message arrives. Its players are written at most once per
// merge_window anyway, so the server reads the publisher's socket in
// bursts at most a window apart: each burst drains what the kernel holds,
// then the readers are woken once, and the connection sleeps until the
// window is over. A 30 fps stream with audio sends about 77 messages a
// second; read as they come, each costs a wake-up of the connection's
// goroutine, a read and a read that finds nothing; paced at 100 ms, ten
// wake-ups a second do the same work, and no flush timer is needed. A
// unit waits no longer than before: at most the window in the socket
// instead of at most the window in the ring.

// PaceReads makes the source of p, reading from nc, deliver its units in
// bursts (see above) when p's stream is in throughput mode with a merge
// window and nc is a TCP connection of a Runtime listener (or TLS over
// one); it reports whether it did. Readers are then woken once per burst,
// when nc has been drained, rather than on the merge window's clock. Call
// it from the goroutine that reads nc, before the first Write; nothing
// else may read nc.
func (p *Publisher) PaceReads(nc net.Conn) bool {
	w := p.s.opts.MergeWindow
	if w <= 0 {
		return false
	}
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	lc, ok := nc.(*limitedConn)
	if !ok || lc.watch != nil || lc.pace != nil {
		return false
	}
	raw, err := lc.SyscallConn()
	if err != nil {
		return false
	}
	lc.pace = &pacer{raw: raw, window: w, flush: p.Flush}
	p.bursts = true
	return true
}

// Flush wakes the readers of p's stream for the units written since the
// last wake-up, if any. The source of a paced publisher calls it (through
// its connection) at the end of each burst.
func (p *Publisher) Flush() {
	if p.pending.Swap(false) {
		p.s.wakeAll()
	}
}

// pacer paces the reads of one connection. Only the connection's reading
// goroutine uses it.
type pacer struct {
	raw    syscall.RawConn
	window time.Duration
	flush  func()
	next   time.Time // the next blocking read waits until then
}

// read returns what the socket holds without waiting; once it holds
// nothing, the burst is over: it flushes, sleeps out the window, and then
// waits for data as an ordinary read does (deadlines apply).
func (pc *pacer) read(c *limitedConn, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var n int
	var errno error
	err := pc.raw.Read(func(fd uintptr) bool {
		for {
			n, errno = syscall.Read(int(fd), p)
			if errno != syscall.EINTR {
				return true // done either way: never wait here
			}
		}
	})
	if err == nil && errno == nil && n > 0 {
		return n, nil
	}
	// The burst is over, or the connection: either way the readers get
	// what it brought now.
	pc.flush()
	switch {
	case err != nil:
		return 0, err // closed, or past the deadline
	case errno == nil:
		return 0, io.EOF
	case !errors.Is(errno, syscall.EAGAIN):
		return 0, &net.OpError{Op: "read", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: os.NewSyscallError("read", errno)}
	}
	if d := time.Until(pc.next); d > 0 {
		time.Sleep(d)
	}
	n, err = c.TCPConn.Read(p)
	pc.next = time.Now().Add(pc.window)
	return n, err
}
