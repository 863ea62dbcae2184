package pipeline

import (
	"syscall"
	"unsafe"
)

// directSupported: the writers' non-blocking writev is a raw Linux system
// call; elsewhere players are written by their own goroutines only.
const directSupported = true

type iovecs = []syscall.Iovec

// write makes one non-blocking writev of bufs to d's socket and returns how
// much it took (0 when it took nothing or failed).
func (sh *directShard) write(d *direct, bufs [][]byte) int {
	vecs := sh.vecs[:0]
	for _, b := range bufs {
		if len(b) == 0 {
			continue
		}
		v := syscall.Iovec{Base: &b[0]}
		v.SetLen(len(b))
		vecs = append(vecs, v)
	}
	sh.vecs = vecs
	sh.n, sh.err = 0, 0
	if len(vecs) > 0 {
		// Control holds a reference to the descriptor for the call, so it
		// cannot be closed and reused meanwhile, and fails without calling
		// fn once the connection is closed; the goroutine then finds out.
		// It skips what RawConn.Write adds for a write that may wait (the
		// poller's reset and the write deadline): this one never waits,
		// and no other write can be running, since the goroutine is parked.
		if err := d.raw.Control(sh.fn); err != nil {
			sh.n = 0
		}
	}
	clear(sh.vecs)
	if sh.err != 0 || sh.n < 0 {
		return 0
	}
	return sh.n
}

// writev is the RawConn callback: one attempt, never a wait. The socket is
// non-blocking, so the call cannot block and is made as a raw system call:
// the scheduler need not prepare to hand the writer's P to another thread,
// which for a writer making hundreds of these in a row is a measurable part
// of their cost.
func (sh *directShard) writev(fd uintptr) {
	for {
		n, _, e := syscall.RawSyscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&sh.vecs[0])), uintptr(len(sh.vecs)))
		if e == syscall.EINTR {
			continue
		}
		sh.n, sh.err = int(n), e
		return
	}
}
