package pipeline

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/sluice-media/sluice/pipeline/config"
)

// limitGate returns a gate over a hub of one pipeline with the limits l.
func limitGate(t *testing.T, opts StreamOptions, l config.Limits) (*Gate, *Metrics) {
	t.Helper()
	h := testHub(t, opts)
	m := NewMetrics()
	return NewGate(h, m, GateOptions{Limits: l}), m
}

// TestAdmissionLimits: max_streams, max_publishers_per_ip and max_pulls
// refuse with reason "limit" (503 over HTTP), count the hit, and give the
// place back when the session ends.
func TestAdmissionLimits(t *testing.T) {
	ctx := context.Background()
	hits := func(m *Metrics, limit string) uint64 { return m.CounterValue("sluice_limit_hits_total", limit) }
	refusal := func(t *testing.T, err error, sentinel error) {
		t.Helper()
		ref := RefusalOf(err)
		if !errors.Is(err, sentinel) || ref.Reason != ReasonLimit || ref.HTTPStatus() != http.StatusServiceUnavailable {
			t.Fatalf("got %v (reason %q, status %d), want %v with reason limit, 503", err, ref.Reason, ref.HTTPStatus(), sentinel)
		}
	}
	client := func(remote string) Request { return Request{Client: ClientInfo{Proto: "p", Remote: remote}} }
	at := func(r Request, path string) Request { r.Path = path; return r }

	t.Run("max_streams", func(t *testing.T) {
		g, m := limitGate(t, StreamOptions{BufferFrames: 64}, config.Limits{MaxStreams: 2})
		p1, err := g.Publish(ctx, at(client("192.0.2.1:1"), "live/a"))
		if err != nil {
			t.Fatal(err)
		}
		p2, err := g.Publish(ctx, at(client("192.0.2.2:1"), "live/b"))
		if err != nil {
			t.Fatal(err)
		}
		defer p2.Close()
		_, err = g.Publish(ctx, at(client("192.0.2.3:1"), "live/c"))
		refusal(t, err, ErrTooManyStreams)
		// A player of a new name would hold a place while it waits.
		_, err = g.Play(ctx, at(client("192.0.2.4:1"), "live/d"))
		refusal(t, err, ErrTooManyStreams)
		if n := hits(m, LimitStreams); n != 2 {
			t.Errorf("streams hits = %d, want 2", n)
		}
		if n := m.CounterValue("sluice_sessions_refused_total", "p", "publish", ReasonLimit); n != 1 {
			t.Errorf("publish refusals for the limit = %d, want 1", n)
		}
		p1.Close()
		p3, err := g.Publish(ctx, at(client("192.0.2.3:1"), "live/c"))
		if err != nil {
			t.Fatalf("a publish once a stream ended: %v", err)
		}
		p3.Close()
	})

	t.Run("max_publishers_per_ip", func(t *testing.T) {
		l := config.DefaultLimits()
		l.MaxPublishersPerIP = 2
		g, m := limitGate(t, StreamOptions{BufferFrames: 64}, l)
		var pubs []*Publisher
		for _, path := range []string{"live/a", "live/b"} {
			p, err := g.Publish(ctx, at(client("192.0.2.1:1000"), path))
			if err != nil {
				t.Fatal(err)
			}
			pubs = append(pubs, p)
		}
		_, err := g.Publish(ctx, at(client("192.0.2.1:2000"), "live/c"))
		refusal(t, err, ErrTooManyPublishers)
		for i, c := range []string{"192.0.2.2:1", "127.0.0.1:1", "[::1]:1", "[::1]:2"} {
			// Another address, and loopback (exempt by default).
			p, err := g.Publish(ctx, at(client(c), "live/other-"+strconv.Itoa(i)))
			if err != nil {
				t.Fatalf("publish from %s: %v", c, err)
			}
			defer p.Close()
		}
		if n := hits(m, LimitPublishersPerIP); n != 1 {
			t.Errorf("publishers_per_ip hits = %d, want 1", n)
		}
		pubs[0].Finish("ended")
		p, err := g.Publish(ctx, at(client("192.0.2.1:3000"), "live/c"))
		if err != nil {
			t.Fatalf("a publish once one of the address's ended: %v", err)
		}
		p.Close()
		pubs[1].Close()
	})

	t.Run("max_pulls", func(t *testing.T) {
		g, m := limitGate(t, StreamOptions{BufferFrames: 64, WaitPublisher: 10 * time.Second}, config.Limits{MaxPulls: 1})
		h := g.Hub()
		feed, err := h.OnDemand("live", time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		defer feed.Close()
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		first := make(chan error, 1)
		go func() {
			rd, err := g.Play(pctx, at(client("192.0.2.1:1"), "live/a"))
			if err == nil {
				rd.Close()
			}
			first <- err
		}()
		dm, err := feed.Next(pctx)
		if err != nil {
			t.Fatal(err)
		}
		// A second stream would need a second pull: refused at once,
		// rather than after wait_publisher.
		_, err = g.Play(pctx, at(client("192.0.2.2:1"), "live/b"))
		refusal(t, err, ErrTooManyPulls)
		if n := hits(m, LimitPulls); n != 1 {
			t.Errorf("pulls hits = %d, want 1", n)
		}
		if h.Stream("live/b") != nil {
			t.Error("the refused player left its stream in the table")
		}
		dm.Fail(errors.New("upstream gone"))
		if err := <-first; !errors.Is(err, ErrUpstreamUnavailable) {
			t.Fatalf("first player: %v", err)
		}
		// The pull's place is free again.
		go func() {
			_, err := g.Play(pctx, at(client("192.0.2.2:1"), "live/b"))
			first <- err
		}()
		dm, err = feed.Next(pctx)
		if err != nil {
			t.Fatal(err)
		}
		dm.Fail(errors.New("upstream gone"))
		<-first
	})
}

// TestPushRateFloor: a push body that trickles (never still long enough
// for the idle deadline) is cut once a window passes with less than
// push_min_rate in it, as a timeout; a body at the rate goes on.
func TestPushRateFloor(t *testing.T) {
	for _, tc := range []struct {
		name  string
		every time.Duration // a 100-byte write this often
		cut   bool
	}{
		{"trickle", 100 * time.Millisecond, true}, // 1000 B/s
		{"steady", 5 * time.Millisecond, false},   // 20000 B/s
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, m := limitGate(t, StreamOptions{BufferFrames: 64}, config.Limits{PushMinRate: 5000, PushRateWindow: 300 * time.Millisecond})
			got := make(chan error, 1)
			handled := make(chan struct{})
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				defer close(handled)
				pub, err := g.Publish(r.Context(), Request{Path: "live/push", Client: ClientInfo{Proto: "p", Remote: r.RemoteAddr}})
				if err != nil {
					got <- err
					return
				}
				defer pub.Close()
				body := NewPushBody(w, r, 10*time.Second, pub)
				defer body.Close()
				_, err = io.Copy(io.Discard, body)
				got <- err
			}))
			defer srv.Close()
			pr, pw := io.Pipe()
			go func() {
				defer pw.Close()
				chunk := make([]byte, 100)
				for i := 0; i < 300; i++ {
					select {
					case <-handled:
						return
					case <-time.After(tc.every):
					}
					if _, err := pw.Write(chunk); err != nil {
						return
					}
				}
			}()
			req, _ := http.NewRequest(http.MethodPost, srv.URL, pr)
			resp, err := srv.Client().Do(req)
			if err == nil {
				resp.Body.Close()
			}
			err = <-got
			var ne net.Error
			if tc.cut {
				if !errors.Is(err, ErrBodyTooSlow) || !errors.As(err, &ne) || !ne.Timeout() {
					t.Fatalf("trickling body: %v, want a timeout wrapping ErrBodyTooSlow", err)
				}
				if n := m.CounterValue("sluice_limit_hits_total", LimitPushRate); n != 1 {
					t.Errorf("push_rate hits = %d, want 1", n)
				}
				return
			}
			if err != nil {
				t.Fatalf("steady body: %v", err)
			}
		})
	}
}

// TestStreamMemoryAt100Mbps: a 100 Mbit/s stream with a 10 s GOP (a GOP
// of 125 MB, twice the default max_buffer_bytes) holds no more than the
// bound: the GOP cache gives way, and a new player starts at the next
// keyframe.
func TestStreamMemoryAt100Mbps(t *testing.T) {
	const limit = config.DefaultMaxBufferBytes
	const rate = 100_000_000
	h := testHub(t, StreamOptions{GOPCache: 1, BufferFrames: config.DefaultBufferFrames, MaxReaderLag: config.DefaultMaxReaderLag, MaxBufferBytes: limit})
	p, err := h.Publish("live/big", ClientInfo{Proto: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	s := p.Stream()
	var ts time.Duration
	var peak int64
	for range 25 {
		ts = writeRate(t, p, ts, time.Second, rate, 10*time.Second)
		peak = max(peak, s.Retained())
	}
	if bound := int64(limit + rate/8/30 + unitCost); peak > bound {
		t.Fatalf("retained %d bytes at peak, over max_buffer_bytes (%d) and one frame", peak, limit)
	}
	r, err := h.Play(context.Background(), "live/big", ClientInfo{Proto: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	// Past the next keyframe (at 30 s) and on, so that the bound keeps
	// the one after it (at 40 s) with what follows.
	writeRate(t, p, ts, 16*time.Second, rate, 10*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	batch, err := r.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, au := range batch {
		if au.Track.Kind() == KindVideo {
			if !au.Key {
				t.Fatal("a new player's first picture is not a keyframe")
			}
			break
		}
	}
}
