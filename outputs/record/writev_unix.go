//go:build unix

package record

import (
	"os"

	"golang.org/x/sys/unix"
)

// maxIov is the most buffers one writev takes (IOV_MAX on Linux and the
// BSDs).
const maxIov = 1024

// writeVec writes bufs to f with writev(2): the shared tag and fragment
// pieces go to the kernel as they are, with no copy into a staging buffer
// and one system call per batch. It returns the bytes written.
func writeVec(f *os.File, bufs [][]byte) (int64, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	// Work on a copy of the slice headers: a short write advances into a
	// buffer, and the caller's (shared) slices must not change.
	var local [16][]byte
	todo := append(local[:0], bufs...)
	var total int64
	for len(todo) > 0 {
		for len(todo) > 0 && len(todo[0]) == 0 {
			todo = todo[1:]
		}
		if len(todo) == 0 {
			break
		}
		batch := todo[:min(len(todo), maxIov)]
		var n int
		var werr error
		if err := rc.Write(func(fd uintptr) bool {
			n, werr = unix.Writev(int(fd), batch)
			return werr != unix.EAGAIN
		}); err != nil {
			return total, err
		}
		if werr == unix.EINTR {
			continue
		}
		if n > 0 {
			total += int64(n)
		}
		if werr != nil {
			return total, &os.PathError{Op: "write", Path: f.Name(), Err: werr}
		}
		if n == 0 {
			return total, &os.PathError{Op: "write", Path: f.Name(), Err: unix.EIO}
		}
		for n > 0 {
			if n >= len(todo[0]) {
				n -= len(todo[0])
				todo = todo[1:]
				continue
			}
			todo[0] = todo[0][n:]
			n = 0
		}
	}
	return total, nil
}
