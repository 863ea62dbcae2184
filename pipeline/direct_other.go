//go:build !linux

package pipeline

// directSupported: direct writes use a raw Linux writev; on other systems
// Direct reports false and every player is written by its own goroutine.
const directSupported = false

type iovecs = []struct{}

func (sh *directShard) write(*direct, [][]byte) int { return 0 }

func (sh *directShard) writev(uintptr) {}
