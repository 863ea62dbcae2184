package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestWatchDeliversEachStreamOnce races Watch registration against streams
// becoming ready: every Watch must see every stream exactly once, whether
// it was registered before, during or after the stream became ready.
func TestWatchDeliversEachStreamOnce(t *testing.T) {
	for round := range 200 {
		h := testHub(t, StreamOptions{GOPCache: 1, BufferFrames: 64})
		const streams = 4
		var wg sync.WaitGroup
		watches := make([]*Watch, 8)
		start := make(chan struct{})
		for i := range watches {
			wg.Go(func() {
				<-start
				watches[i] = h.Watch(func(*Stream) bool { return true })
			})
		}
		srcs := make([]*source, streams)
		for i := range srcs {
			srcs[i] = publish(t, h, fmt.Sprintf("live/s%d", i), 1)
		}
		for i := range srcs {
			wg.Go(func() {
				<-start
				srcs[i].write(t, 2) // a keyframe and an audio unit: ready
			})
		}
		close(start)
		wg.Wait()
		for i, w := range watches {
			seen := map[string]int{}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			for len(seen) < streams {
				s, err := w.Next(ctx)
				if err != nil {
					t.Fatalf("round %d watch %d: %v after %v", round, i, err, seen)
				}
				seen[s.Path()]++
			}
			cancel()
			// Anything more is a second delivery.
			ctx, cancel = context.WithTimeout(context.Background(), 5*time.Millisecond)
			if s, err := w.Next(ctx); err == nil {
				t.Fatalf("round %d watch %d: %s delivered twice", round, i, s.Path())
			}
			cancel()
			w.Close()
		}
		h.Close()
	}
}

// TestTimestampsNeverGoBackAcrossPublishers replaces the publisher of one
// stream many times, at random moments and with random source clocks and
// track orders, and checks the property a reader relies on: per track, DTS
// strictly increases.
func TestTimestampsNeverGoBackAcrossPublishers(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := range 50 {
		h := testHub(t, StreamOptions{GOPCache: 1, BufferFrames: 4096, PublisherGrace: time.Minute})
		var r *Reader
		for session := range 8 {
			p, err := h.Publish("live/x", ClientInfo{Proto: "test"})
			if err != nil {
				t.Fatal(err)
			}
			// Each session has its own clock origin; audio may lead or lag
			// video by up to 100 ms, as encoders do at start.
			base := time.Duration(rng.IntN(100000)) * time.Millisecond
			skew := time.Duration(rng.IntN(200)-100) * time.Millisecond
			units := 10 + rng.IntN(40)
			for i := range units {
				d := base + time.Duration(i)*20*time.Millisecond
				var au *AccessUnit
				if i%2 == 0 {
					au = &AccessUnit{Track: testVideo, DTS: d, PTS: d + 40*time.Millisecond, Key: i%10 == 0}
				} else {
					au = &AccessUnit{Track: testAudio, DTS: d + skew, PTS: d + skew, Key: true}
				}
				if err := p.Write(au); err != nil {
					t.Fatal(err)
				}
			}
			if r == nil {
				if r, err = h.Play(context.Background(), "live/x", ClientInfo{Proto: "test"}); err != nil {
					t.Fatal(err)
				}
			}
			// A random gap, from none to a few milliseconds, before the
			// next publisher takes over.
			if g := rng.IntN(3); g > 0 {
				time.Sleep(time.Duration(g) * time.Millisecond)
			}
			p.Close()
			_ = session
		}
		var last [numKinds]time.Duration
		var has [numKinds]bool
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
			batch, err := r.Next(ctx)
			cancel()
			if err != nil {
				break
			}
			for _, au := range batch {
				k := au.Track.Kind()
				if has[k] && au.DTS <= last[k] {
					t.Fatalf("trial %d: %s DTS %v after %v", trial, k, au.DTS, last[k])
				}
				if au.PTS < au.DTS {
					t.Fatalf("trial %d: PTS %v before DTS %v", trial, au.PTS, au.DTS)
				}
				last[k], has[k] = au.DTS, true
			}
		}
		r.Close()
	}
}

// TestUnchangedReconnectKeepsTracks: a publisher that comes back with equal
// parameters keeps the stream's tracks, so readers send no new sequence
// header; changed parameters make a new track.
func TestUnchangedReconnectKeepsTracks(t *testing.T) {
	h := testHub(t, StreamOptions{GOPCache: 1, BufferFrames: 256, PublisherGrace: time.Minute})
	src := publish(t, h, "live/x", 2)
	src.write(t, 4)
	r, err := h.Play(context.Background(), "live/x", ClientInfo{Proto: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	next(t, r)
	src.pub.Close()

	p2, err := h.Publish("live/x", ClientInfo{Proto: "test"})
	if err != nil {
		t.Fatal(err)
	}
	same := &Track{Codec: CodecH264, Config: []byte{1}}
	changed := &Track{Codec: CodecH264, Config: []byte{9}}
	for i, tr := range []*Track{same, same, changed} {
		d := time.Duration(i) * 40 * time.Millisecond
		if err := p2.Write(&AccessUnit{Track: tr, DTS: d, PTS: d, Key: true}); err != nil {
			t.Fatal(err)
		}
	}
	var got []*Track
	for len(got) < 3 {
		for _, au := range next(t, r) {
			got = append(got, au.Track)
		}
	}
	if got[0] != testVideo || got[1] != testVideo {
		t.Errorf("equal parameters made a new track")
	}
	if got[2] != changed {
		t.Errorf("changed parameters kept the old track")
	}
	p2.Close()
}

// TestOnDemandSource covers the on-demand contract: the first player
// demands the stream and waits for it; later players share it; the demand
// is released a linger after the last reader left; a failing source ends
// the wait at once.
func TestOnDemandSource(t *testing.T) {
	h := testHub(t, StreamOptions{GOPCache: 1, BufferFrames: 256, WaitPublisher: 10 * time.Second})
	feed, err := h.OnDemand("live", 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer feed.Close()
	if _, err := h.OnDemand("live", time.Second); err == nil {
		t.Fatal("a second on-demand source for one pipeline was accepted")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// The source: publishes what is demanded until Done.
	var wg sync.WaitGroup
	defer wg.Wait()
	demands := make(chan *Demand, 4)
	wg.Go(func() {
		for {
			dm, err := feed.Next(ctx)
			if err != nil {
				return
			}
			demands <- dm
			if strings.HasSuffix(dm.Path, "fail") {
				dm.Fail(errors.New("upstream said no"))
				continue
			}
			wg.Go(func() {
				src := publish(t, h, dm.Path, 1)
				for {
					select {
					case <-dm.Done():
						src.pub.Close()
						return
					case <-time.After(5 * time.Millisecond):
						src.write(t, 2)
					}
				}
			})
		}
	})

	r1, err := h.Play(ctx, "live/a", ClientInfo{Proto: "test"})
	if err != nil {
		t.Fatalf("first player: %v", err)
	}
	dm := <-demands
	r2, err := h.Play(ctx, "live/a", ClientInfo{Proto: "test"})
	if err != nil {
		t.Fatalf("second player: %v", err)
	}
	select {
	case extra := <-demands:
		t.Fatalf("a second player demanded %s again", extra.Path)
	default:
	}
	r1.Close()
	select {
	case <-dm.Done():
		t.Fatal("demand released while a reader remained")
	case <-time.After(100 * time.Millisecond):
	}
	r2.Close()
	select {
	case <-dm.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("demand not released after the linger")
	}

	start := time.Now()
	_, err = h.Play(ctx, "live/fail", ClientInfo{Proto: "test"})
	if !errors.Is(err, ErrUpstreamUnavailable) {
		t.Fatalf("play of a failing source: %v, want ErrUpstreamUnavailable", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("a failing source ended the wait after %v, not at once", took)
	}
	<-demands
	cancel()
}

// TestOnDemandFailAfterThePlayerLeft: a player that gives up while the
// source is still trying leaves nothing behind once the source fails: the
// stream is forgotten, without waiting for the linger (it once stayed in
// the table for good, counting against max_streams, when the player left
// before the upstream answered "not found").
func TestOnDemandFailAfterThePlayerLeft(t *testing.T) {
	h := testHub(t, StreamOptions{GOPCache: 1, BufferFrames: 256, WaitPublisher: 10 * time.Second})
	feed, err := h.OnDemand("live", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	defer feed.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pctx, leave := context.WithCancel(ctx)
	played := make(chan error, 1)
	go func() {
		_, err := h.Play(pctx, "live/gone", ClientInfo{Proto: "test"})
		played <- err
	}()
	dm, err := feed.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	leave()
	if err := <-played; !errors.Is(err, context.Canceled) {
		t.Fatalf("the player that left got %v", err)
	}
	if h.Stream("live/gone") == nil {
		t.Fatal("the stream was forgotten while its source was still trying")
	}
	dm.Fail(errors.New("upstream: stream not found"))
	if s := h.Stream("live/gone"); s != nil {
		t.Fatalf("the stream stayed in the table after its source failed with no player left: %+v", s.Info())
	}
	select {
	case <-dm.Done():
	default:
		t.Fatal("Done is open after Fail")
	}
}

// TestStageStoppedAloneTakesItsRoutes: routes serve while their stage runs,
// under its context, and vanish when it stops; another stage's routes stay.
func TestStageStoppedAloneTakesItsRoutes(t *testing.T) {
	rt := NewRuntime(slog.New(slog.DiscardHandler), nil)
	rt.Hub.SetResolver(func(string) (StreamOptions, bool) { return StreamOptions{Pipeline: "live"}, true })
	srv := httptest.NewServer(rt.HTTP)
	defer srv.Close()

	mk := func(suffix string) (*Routes, chan bool) {
		rs := rt.HTTP.Routes()
		stopped := make(chan bool, 1)
		rs.Handle("", http.MethodGet, Suffix(suffix), func(w http.ResponseWriter, r *http.Request, stream, _ string) {
			if r.URL.Query().Get("wait") != "" {
				<-r.Context().Done()
				stopped <- Stopped(r.Context())
				return
			}
			_, _ = io.WriteString(w, suffix)
		})
		return rs, stopped
	}
	a, aStopped := mk(".a")
	b, _ := mk(".b")
	get := func(u string) (int, string) {
		resp, err := http.Get(srv.URL + u)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if code, _ := get("/live/x.a"); code != http.StatusNotFound {
		t.Fatalf("a route served before its stage ran: %d", code)
	}
	actx, acancel := context.WithCancel(context.Background())
	bctx, bcancel := context.WithCancel(context.Background())
	defer bcancel()
	idle := stageFunc(func(ctx context.Context) error { <-ctx.Done(); return nil })
	aDone := make(chan error, 1)
	go func() { aDone <- RunStage(actx, idle, a, time.Second) }()
	go func() { _ = RunStage(bctx, idle, b, time.Second) }()
	waitFor(t, func() bool { code, _ := get("/live/x.a"); return code == http.StatusOK })
	waitFor(t, func() bool { code, _ := get("/live/x.b"); return code == http.StatusOK })

	// A long request of stage a ends with the stage, and knows why.
	go func() { _, _ = http.Get(srv.URL + "/live/x.a?wait=1") }()
	time.Sleep(50 * time.Millisecond) // let the request reach the handler
	acancel()
	if err := <-aDone; err != nil {
		t.Fatalf("stage a: %v", err)
	}
	select {
	case why := <-aStopped:
		if !why {
			t.Error("the handler's context ended without ErrStageStopped")
		}
	case <-time.After(time.Second):
		t.Fatal("the long request outlived its stage")
	}
	if code, _ := get("/live/x.a"); code != http.StatusNotFound {
		t.Fatalf("stage a's route still served after it stopped: %d", code)
	}
	if code, body := get("/live/x.b"); code != http.StatusOK || body != ".b" {
		t.Fatalf("stage b's route: %d %q", code, body)
	}
}

type stageFunc func(ctx context.Context) error

func (f stageFunc) Run(ctx context.Context) error { return f(ctx) }

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// recordingAuth records every decision and notification it is asked for.
type recordingAuth struct {
	mu     sync.Mutex
	events []string
	deny   Action
}

func (a *recordingAuth) Authorize(_ context.Context, req AuthRequest) AuthDecision {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.events = append(a.events, string(req.Action)+" "+req.Proto+" "+req.Path)
	if req.Action == a.deny {
		return AuthDecision{Reason: "no"}
	}
	return AuthDecision{Allow: true}
}

func (a *recordingAuth) Notify(_ context.Context, req AuthRequest) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.events = append(a.events, string(req.Action)+" "+req.Proto+" "+req.Path)
}

func (a *recordingAuth) log() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return strings.Join(a.events, "; ")
}

// TestGateAdmission: connect then the action is asked, the release
// notifies, and refusals carry their reason and HTTP status.
func TestGateAdmission(t *testing.T) {
	h := testHub(t, StreamOptions{GOPCache: 1, BufferFrames: 64})
	auth := &recordingAuth{}
	m := NewMetrics()
	g := NewGate(h, m, GateOptions{Auth: func(string) Authorizer { return auth }})
	ctx := context.Background()
	req := Request{Path: "live/x", Client: ClientInfo{Proto: "p"}}
	pub, err := g.Publish(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	src := &source{pub: pub, gop: 1}
	src.write(t, 2)
	rd, err := g.Play(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	rd.Finish("client_closed")
	pub.Finish("ended")
	want := "connect p live/x; publish p live/x; connect p live/x; play p live/x; stop p live/x; unpublish p live/x"
	if got := auth.log(); got != want {
		t.Errorf("auth saw\n  %s\nwant\n  %s", got, want)
	}
	if n := m.Counter("sluice_sessions_closed_total", "", "proto", "role", "cause").With("p", "play", "client_closed").Value(); n != 1 {
		t.Errorf("closed count %d", n)
	}

	for _, tc := range []struct {
		name   string
		req    Request
		deny   Action
		reason string
		status int
	}{
		{"bad path", Request{Path: "x", Client: ClientInfo{Proto: "p"}}, "", ReasonBadPath, 400},
		{"connect denied", req, ActionConnect, ReasonDenied, 403},
		{"publish denied", req, ActionPublish, ReasonDenied, 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			auth.deny = tc.deny
			_, err := g.Publish(ctx, tc.req)
			ref := RefusalOf(err)
			if err == nil || ref.Reason != tc.reason || ref.HTTPStatus() != tc.status {
				t.Fatalf("err %v: reason %q status %d, want %q %d", err, ref.Reason, ref.HTTPStatus(), tc.reason, tc.status)
			}
		})
	}
	auth.deny = ""
	p1, err := g.Publish(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	defer p1.Close()
	_, err = g.Publish(ctx, req)
	if ref := RefusalOf(err); ref.Reason != ReasonBusy || ref.HTTPStatus() != http.StatusConflict {
		t.Fatalf("second publisher: %v (%s)", err, ref.Reason)
	}
}
