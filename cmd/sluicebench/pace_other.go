//go:build !unix

package main

import "syscall"

// pacingSupported is false: -read-interval needs a non-blocking read of the
// socket, written here for unix only.
const pacingSupported = false

func pacedRead(syscall.RawConn, []byte) (int, bool, error) { return 0, false, nil }
