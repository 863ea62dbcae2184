package pipeline

import (
	"context"
	"sync/atomic"
	"time"
)

// maxBatch bounds how many units one Next returns, so that one batch (one
// writev) stays a reasonable size for a reader that is far behind.
const maxBatch = 256

// Drop policy: a reader that has to skip ahead this many times within
// skipWindow is dropped; it cannot keep up with the stream.
const (
	maxSkips   = 3
	skipWindow = time.Minute
)

// Reader is one consumer's cursor on a stream. It is used from one goroutine
// (with Direct, the stream's writers advance it while that goroutine waits).
type Reader struct {
	s      *Stream
	info   ClientInfo
	cursor uint64
	// pos is cursor as the publisher may see it: stored once a batch has
	// been taken, so that it never passes a unit still to be read. slot
	// is the reader's index in the stream's cursors.
	pos     atomic.Uint64
	slot    int
	waitKey bool
	batch   []*AccessUnit // grows as needed, up to maxBatch
	closed  bool

	// sent is the track of the last unit of each kind Next returned: the
	// one whose sequence header the output has sent.
	sent [numKinds]*Track
	d    *direct // set by Direct

	skips      int
	skipsSince time.Time

	sess *session // set by the Gate; nil for readers it did not admit
}

// Stream returns the stream being read.
func (r *Reader) Stream() *Stream { return r.s }

// Info returns the client the reader serves.
func (r *Reader) Info() ClientInfo { return r.info }

// Next blocks until at least one access unit is available and returns the
// units from the cursor on, in publish order, at most maxBatch of them. The
// returned slice is reused by the next call. Units are skipped only when the
// reader has fallen behind (see the package doc): video resumes at a keyframe.
//
// In throughput mode the publisher wakes readers at most once per merge
// window, so a reader that keeps up returns about once per window with a
// window's worth of units, written with one system call.
//
// Next returns ErrStreamEnded after the last unit of a stream that has ended,
// ErrReaderTooSlow when the reader is dropped, and ctx.Err() when ctx ends.
func (r *Reader) Next(ctx context.Context) ([]*AccessUnit, error) {
	s := r.s
	// The last batch has been written: drop its references, or a reader
	// that now waits (parked for the direct writers, or for a quiet
	// stream) would keep those units, a whole GOP after a start from the
	// cache, alive for as long as it waits.
	clear(r.batch)
	if n := len(r.batch); cap(r.batch) > 64 && n < cap(r.batch)/8 {
		// The long batch of a start or a catch-up is over: a reader that
		// keeps up needs a few units a batch, not room for maxBatch.
		r.batch = make([]*AccessUnit, 0, 16)
	}
	for {
		notify := s.notify.Load()
		head := s.ring.head.Load()
		if r.cursor < head {
			if r.behind(head) {
				if err := r.skip(); err != nil {
					return nil, err
				}
				continue
			}
			b := r.batch[:0]
			c := r.cursor
			for ; c < head && len(b) < maxBatch; c++ {
				au := s.ring.get(c)
				if au == nil {
					break // lapped while reading; the next call skips
				}
				if r.waitKey && au.Track.Kind() == KindVideo {
					if !au.Key {
						continue
					}
					r.waitKey = false
				}
				b = append(b, au)
				r.sent[au.Track.Kind()] = au.Track
			}
			r.seek(c)
			r.batch = b
			if len(b) > 0 {
				return b, nil
			}
			continue
		}
		select {
		case <-s.done:
			if r.cursor >= s.ring.head.Load() {
				return nil, ErrStreamEnded
			}
			continue
		default:
		}
		if r.d != nil && !r.waitKey {
			if err := r.park(ctx); err != nil {
				return nil, err
			}
			continue
		}
		// No case for s.done: end() closes done and then wakes readers, and
		// the check above catches an end that came before notify was
		// loaded. A two-way select is measurably cheaper per wake-up.
		select {
		case <-*notify:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// seek moves the cursor to c, and tells the publisher (pos) that
// nothing before c will be read.
func (r *Reader) seek(c uint64) {
	r.cursor = c
	r.pos.Store(c)
}

// behind reports whether the reader has been lapped by the ring or lags the
// newest unit by more than the pipeline's max_reader_lag.
func (r *Reader) behind(head uint64) bool {
	s := r.s
	if r.cursor < s.ring.oldest() {
		return true
	}
	cur := s.ring.get(r.cursor)
	if cur == nil {
		return true
	}
	if lag := s.opts.MaxReaderLag; lag > 0 {
		if newest := s.ring.get(head - 1); newest != nil && newest.DTS-cur.DTS > lag {
			return true
		}
	}
	return false
}

// skip moves a lagging reader to the newest GOP start, or to the head (waiting
// for the next keyframe) when that keyframe is no longer ahead of it.
func (r *Reader) skip() error {
	s := r.s
	now := time.Now()
	if now.Sub(r.skipsSince) > skipWindow {
		r.skips, r.skipsSince = 0, now
	}
	r.skips++
	s.hub.m.readerSkips.With(s.opts.Pipeline).Inc()
	if r.skips > maxSkips {
		s.hub.m.readersDropped.With(s.opts.Pipeline).Inc()
		return ErrReaderTooSlow
	}
	if k := s.lastKey.Load(); k > 0 && k-1 > r.cursor && k-1 >= s.ring.oldest() && s.ring.get(k-1) != nil {
		r.seek(k - 1)
		r.waitKey = false
		return nil
	}
	r.seek(s.ring.head.Load())
	r.waitKey = true
	return nil
}

// Close releases the reader. It is idempotent.
func (r *Reader) Close() { r.Finish("") }

// Finish is Close, recording why the session ended (a cause such as
// "client_closed", "stream_ended", "too_slow") in
// sluice_sessions_closed_total, and then telling the authorizer the player
// left. Only the first Finish or Close counts.
func (r *Reader) Finish(cause string) {
	r.release()
	r.sess.finish(cause)
}

// CountBytes adds n sent bytes to the session's and the protocol's counts.
func (r *Reader) CountBytes(n int64) { r.sess.add(n) }

func (r *Reader) release() {
	if r.closed {
		return
	}
	r.closed = true
	if r.d != nil {
		r.leaveDirect()
	}
	r.s.dropCursor(r)
	if r.s.readers.Add(-1) == 0 {
		r.s.readerLeft()
	}
}
