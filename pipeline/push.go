package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"time"
)

// PushBody is the request body of an HTTP publisher (FLV or MPEG-TS pushed
// with POST/PUT), read the one way every HTTP ingest reads it: a read
// deadline of idle renewed before each read, so that a stalled body is cut;
// the deadline pulled in when the request's context ends (the stage
// stopping, or the client gone), so that a blocked read returns at once;
// every byte counted on the publisher as it arrives; and the body's own last
// error kept, so that a cut body is told apart from a clean end even by a
// parser that folds both into io.EOF. An operator's kick pulls the deadline
// in the same way, and Read then returns ErrKicked.
//
// A body that trickles in, never stalling long enough for the idle
// deadline, is cut by the limits block's push_min_rate: over every
// push_rate_window it must bring that many bytes a second, or Read fails
// with a timeout (net.Error) that names the limit, counted in
// sluice_limit_hits_total{limit="push_rate"}.
type PushBody struct {
	r      io.Reader
	rc     *http.ResponseController
	idle   time.Duration
	ctx    context.Context
	pub    *Publisher
	stop   func() bool
	unkick func()
	kicked atomic.Bool
	n      int64
	err    error

	// The rate floor: at least min bytes in every window (none when
	// min is 0); the current window began at from, at byte count at.
	gate   *Gate
	min    int64
	window time.Duration
	from   time.Time
	at     int64
}

// ErrBodyTooSlow is the error, within the timeout PushBody.Read returns,
// of a body slower than push_min_rate.
var ErrBodyTooSlow = errors.New("request body slower than push_min_rate")

// slowBody is a timeout, so that every HTTP ingest answers it as one (408)
// and ends the session with cause "timeout".
type slowBody struct{ detail string }

func (e *slowBody) Error() string   { return e.detail }
func (e *slowBody) Timeout() bool   { return true }
func (e *slowBody) Temporary() bool { return false }
func (e *slowBody) Unwrap() error   { return ErrBodyTooSlow }

var _ net.Error = (*slowBody)(nil)

// ErrKicked is what a kicked publisher's PushBody returns: an operator
// ended the session (Publisher.KickCause says how).
var ErrKicked = errors.New("session ended by an operator")

// NewPushBody wraps r's body for pub. Call Close when the session ends.
func NewPushBody(w http.ResponseWriter, r *http.Request, idle time.Duration, pub *Publisher) *PushBody {
	rc := http.NewResponseController(w)
	b := &PushBody{r: r.Body, rc: rc, idle: idle, ctx: r.Context(), pub: pub, from: time.Now()}
	if g := pub.sess.gate(); g != nil {
		l := g.Limits()
		b.gate, b.window = g, l.PushRateWindow
		b.min = int64(float64(l.PushMinRate) * l.PushRateWindow.Seconds())
	}
	b.stop = context.AfterFunc(b.ctx, func() { _ = rc.SetReadDeadline(time.Now()) })
	b.unkick = pub.OnKick(func() {
		b.kicked.Store(true)
		_ = rc.SetReadDeadline(time.Now())
	})
	return b
}

// Read reads the body under the idle deadline.
func (b *PushBody) Read(p []byte) (int, error) {
	if err := b.rc.SetReadDeadline(time.Now().Add(b.idle)); err != nil {
		return 0, err
	}
	// Checked after the deadline is set: if the context ended first, or
	// a kick came, its deadline may just have been overwritten.
	if err := b.ctx.Err(); err != nil {
		b.err = err
		return 0, err
	}
	if b.kicked.Load() {
		b.err = ErrKicked
		return 0, ErrKicked
	}
	if err := b.checkRate(); err != nil {
		b.err = err
		return 0, err
	}
	n, err := b.r.Read(p)
	b.n += int64(n)
	b.pub.CountBytes(int64(n))
	if err != nil && b.kicked.Load() {
		err = ErrKicked
	}
	if err != nil {
		b.err = err
	}
	return n, err
}

// checkRate fails once a whole window has passed with fewer than min
// bytes in it, and starts the next window otherwise.
func (b *PushBody) checkRate() error {
	if b.min <= 0 {
		return nil
	}
	now := time.Now()
	if now.Sub(b.from) < b.window {
		return nil
	}
	if got := b.n - b.at; got < b.min {
		b.gate.CountLimit(LimitPushRate)
		return &slowBody{detail: fmt.Sprintf("request body slower than push_min_rate: %d bytes in %s, at least %d wanted",
			got, now.Sub(b.from).Round(time.Millisecond), b.min)}
	}
	b.from, b.at = now, b.n
	return nil
}

// N returns the bytes read so far.
func (b *PushBody) N() int64 { return b.n }

// Err returns the error the body itself last returned: io.EOF after a clean
// end, io.ErrUnexpectedEOF for a cut chunked body, a timeout, a reset.
func (b *PushBody) Err() error { return b.err }

// Close stops watching the request's context and the operator's kick.
func (b *PushBody) Close() {
	b.stop()
	b.unkick()
}

// AnswerPush answers an HTTP publisher whose session ended with cause:
// 204 for a clean end ("ended"), 503 when the server stops ("shutdown"),
// 409 when an operator ended it ("kicked", "stopped": the same status as
// a publish refused for a stopped stream), 408 for a stalled body
// ("timeout"), and 400 for anything else the client did (a cut body,
// bytes that do not parse): never an implicit 200.
func AnswerPush(w http.ResponseWriter, r *http.Request, cause string, err error) {
	switch cause {
	case "ended":
		w.WriteHeader(http.StatusNoContent)
		return
	case CauseShutdown:
		Refuse(ReasonShutdown, errors.New("server is shutting down")).WriteHTTP(w, r)
		return
	case CauseKicked, CauseStopped:
		w.Header().Set("Connection", "close")
		http.Error(w, "publish ended by an operator: "+cause, http.StatusConflict)
		return
	}
	w.Header().Set("Connection", "close")
	status := http.StatusBadRequest
	if cause == CauseTimeout {
		status = http.StatusRequestTimeout
	}
	msg := cause
	if err != nil {
		msg = err.Error()
	}
	http.Error(w, msg, status)
}

// Served is the Run of a stage whose work is all in its HTTP routes (an
// HTTP ingest or output): it waits for ctx to end. The routes' handlers run
// under the same ctx (Routes) and end with it; the graph waits for them.
// Embed it to make such a stage.
type Served struct{}

// Run waits for ctx to end.
func (Served) Run(ctx context.Context) error {
	<-ctx.Done()
	return nil
}
