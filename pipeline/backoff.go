package pipeline

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff paces the retries of a client whose connection keeps failing
// (a pull, a forward, an edge): exponential from Min to Max, each wait
// shortened by a random part of up to a quarter, so that the clients of a
// server that restarted do not all come back in step, and back to Min after
// a connection that lasted Good. The zero value is not usable; set Min and
// Max. A Backoff is used from one goroutine.
type Backoff struct {
	Min, Max time.Duration
	// Good is how long a connection must last for the next wait to start
	// from Min again; a minute when 0.
	Good time.Duration
	next time.Duration
}

// Next returns how long to wait before the next attempt, after an attempt
// whose connection lasted lasted (0 when it never connected).
func (b *Backoff) Next(lasted time.Duration) time.Duration {
	good := b.Good
	if good <= 0 {
		good = time.Minute
	}
	if b.next <= 0 || lasted >= good {
		b.next = b.Min
	}
	d := b.next
	b.next = min(b.next*2, b.Max)
	if q := d / 4; q > 0 {
		d -= rand.N(q)
	}
	return d
}

// Reset makes the next wait Min again, for a client that knows its
// connection is good by other means than how long it lasted.
func (b *Backoff) Reset() { b.next = 0 }

// Sleep waits d, and returns false at once if ctx ends or done (which may
// be nil) is closed first.
func Sleep(ctx context.Context, d time.Duration, done <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	case <-done:
		return false
	}
}
