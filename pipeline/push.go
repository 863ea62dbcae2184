package pipeline

import (
	"context"
	"errors"
	"io"
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
}

// ErrKicked is what a kicked publisher's PushBody returns: an operator
// ended the session (Publisher.KickCause says how).
var ErrKicked = errors.New("session ended by an operator")

// NewPushBody wraps r's body for pub. Call Close when the session ends.
func NewPushBody(w http.ResponseWriter, r *http.Request, idle time.Duration, pub *Publisher) *PushBody {
	rc := http.NewResponseController(w)
	b := &PushBody{r: r.Body, rc: rc, idle: idle, ctx: r.Context(), pub: pub}
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
