package pipeline

import "sync/atomic"

// ring holds a stream's most recent access units. One publisher goroutine
// appends; any number of readers load slots without locks. A slot is
// identified by the unit's sequence number, so a reader that loads a slot the
// publisher has already reused sees a different number and knows it was
// lapped.
type ring struct {
	slots []atomic.Pointer[AccessUnit]
	mask  uint64
	head  atomic.Uint64 // sequence number the next unit will get
}

func newRing(size int) *ring {
	n := 1
	for n < size {
		n <<= 1
	}
	return &ring{slots: make([]atomic.Pointer[AccessUnit], n), mask: uint64(n - 1)}
}

// push stores au and publishes it to readers. Only the publisher calls it.
func (r *ring) push(au *AccessUnit) {
	seq := r.head.Load()
	au.seq = seq
	r.slots[seq&r.mask].Store(au)
	// The store of head is the release that makes the slot visible.
	r.head.Store(seq + 1)
}

// get returns the unit with sequence number seq, or nil if it has been
// overwritten or not yet written.
func (r *ring) get(seq uint64) *AccessUnit {
	au := r.slots[seq&r.mask].Load()
	if au == nil || au.seq != seq {
		return nil
	}
	return au
}

// release drops the unit with sequence number seq, so that its memory can
// be reclaimed before the ring laps it. A reader that loads the slot later
// sees nil and skips ahead, as if lapped. Only the publisher calls it.
func (r *ring) release(seq uint64) {
	r.slots[seq&r.mask].CompareAndSwap(r.get(seq), nil)
}

// oldest returns the smallest sequence number that may still be in the ring.
func (r *ring) oldest() uint64 {
	h := r.head.Load()
	if n := uint64(len(r.slots)); h > n {
		return h - n
	}
	return 0
}
