//go:build unix

package main

import (
	"io"
	"os"
	"syscall"
)

// pacingSupported says pacedRead can read a socket without waiting.
const pacingSupported = true

// pacedRead reads what the socket holds now into b without waiting for
// more: empty reports that it held nothing (read(2) said EAGAIN on the
// non-blocking descriptor Go keeps).
func pacedRead(raw syscall.RawConn, b []byte) (n int, empty bool, err error) {
	var rerr error
	cerr := raw.Read(func(fd uintptr) bool {
		for {
			n, rerr = syscall.Read(int(fd), b)
			if rerr != syscall.EINTR {
				return true // never wait: the pacer decides when to read again
			}
		}
	})
	switch {
	case cerr != nil:
		return 0, false, cerr
	case rerr == syscall.EAGAIN:
		return 0, true, nil
	case rerr != nil:
		return 0, false, os.NewSyscallError("read", rerr)
	case n == 0 && len(b) > 0:
		return 0, false, io.EOF
	}
	return n, false, nil
}
