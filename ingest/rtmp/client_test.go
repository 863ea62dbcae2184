package rtmp_test

import (
	"context"
	"errors"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-media/sluice/ingest/rtmp"
	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/sluicetest"
)

// recorder is a pipeline.Sink that counts what a pull wrote; the test
// reads the counts while the pull runs.
type recorder struct {
	units, bytes atomic.Int64
	meta         atomic.Bool
}

func (r *recorder) Write(*pipeline.AccessUnit) error { r.units.Add(1); return nil }
func (r *recorder) SetMetadata(*pipeline.Metadata)   { r.meta.Store(true) }
func (r *recorder) Expect(bool, bool)                {}
func (r *recorder) CountBytes(n int64)               { r.bytes.Add(n) }

// listener serves every TCP connection with serve until the test ends,
// when stop closes.
func listener(t *testing.T, serve func(nc net.Conn, stop <-chan struct{})) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer nc.Close()
				serve(nc, stop)
			}()
		}
	}()
	t.Cleanup(func() {
		close(stop)
		ln.Close()
		wg.Wait()
	})
	return ln.Addr().String()
}

// TestPullErrors checks that each way a pull fails is told apart with
// errors.Is, and fast: a refusal or a dead upstream well within the idle
// timeout, silence at the idle timeout.
func TestPullErrors(t *testing.T) {
	_, ra, _ := start(t, `wait_publisher = "0s"`)
	silent := listener(t, func(_ net.Conn, stop <-chan struct{}) { <-stop })
	hangUp := listener(t, func(net.Conn, <-chan struct{}) {})

	for _, tc := range []struct {
		name string
		url  string
		idle time.Duration
		want error
	}{
		{"missing stream", "rtmp://" + ra + "/live/none", 10 * time.Second, pipeline.ErrStreamNotFound},
		{"missing stream with a token", "rtmp://" + ra + "/live/none?token=abc", 10 * time.Second, pipeline.ErrStreamNotFound},
		{"path outside every pipeline", "rtmp://" + ra + "/other/none", 10 * time.Second, pipeline.ErrStreamNotFound},
		{"handshake fails", "rtmp://" + hangUp + "/live/x", 10 * time.Second, pipeline.ErrUpstreamDown},
		{"silent upstream", "rtmp://" + silent + "/live/x", 300 * time.Millisecond, pipeline.ErrUpstreamIdle},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, _ := url.Parse(tc.url)
			opened := false
			begin := time.Now()
			err := rtmp.Pull(context.Background(), u, rtmp.ClientOptions{IdleTimeout: tc.idle}, func() (pipeline.Sink, error) {
				opened = true
				return &recorder{}, nil
			})
			took := time.Since(begin)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Pull: %v, want %v", err, tc.want)
			}
			if opened {
				t.Error("open was called for a pull that never delivered")
			}
			if limit := max(tc.idle/2, 2*time.Second); tc.want != pipeline.ErrUpstreamIdle && took > limit {
				t.Errorf("took %v, want well under the %v idle timeout", took, tc.idle)
			}
			if strings.Contains(err.Error(), "token=abc") {
				t.Errorf("the error shows the query string: %v", err)
			}
		})
	}
}

// TestPullCopiesAndEnds pulls a stream from a Sluice, and checks that the
// pull ends cleanly (nil) when the upstream stream ends and with ctx's
// error when ctx ends.
func TestPullCopiesAndEnds(t *testing.T) {
	srv, ra, _ := start(t, `publisher_grace = "0s"`)
	pub := sluicetest.PublishLoop(t, sluicetest.Fixture("av.mp4"), "flv", "rtmp://"+ra+"/live/src")
	waitLive(t, srv, "live/src")
	u, _ := url.Parse("rtmp://" + ra + "/live/src")

	t.Run("ctx", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		rec := &recorder{}
		var err error
		finished := make(chan struct{})
		go func() {
			defer close(finished)
			err = rtmp.Pull(ctx, u, rtmp.ClientOptions{}, func() (pipeline.Sink, error) { return rec, nil })
		}()
		t.Cleanup(func() { cancel(); <-finished })
		sluicetest.Eventually(t, 10*time.Second, func() bool {
			select {
			case <-finished:
				return true
			default:
				return rec.units.Load() >= 50
			}
		}, "no units within 10 s")
		select {
		case <-finished:
			t.Fatalf("the pull ended early: %v", err)
		default:
		}
		cancel()
		<-finished
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Pull after cancel: %v, want context.Canceled", err)
		}
		if !rec.meta.Load() || rec.bytes.Load() == 0 {
			t.Errorf("metadata %v, bytes %d: want both", rec.meta.Load(), rec.bytes.Load())
		}
	})

	t.Run("upstream ends", func(t *testing.T) {
		started := make(chan struct{})
		done := make(chan error, 1)
		go func() {
			done <- rtmp.Pull(context.Background(), u, rtmp.ClientOptions{}, func() (pipeline.Sink, error) {
				close(started)
				return &recorder{}, nil
			})
		}()
		select {
		case <-started:
		case err := <-done:
			t.Fatalf("pull ended before delivering: %v", err)
		}
		_ = pub.Process.Kill()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("Pull after the upstream stream ended: %v, want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the pull did not end with the upstream stream")
		}
	})
}

// TestPushToSluice forwards a stream from one Sluice to another with Push,
// reads it back over HTTP-FLV with ffprobe, and checks that Push opens its
// reader only once the publish is accepted, ends cleanly when the stream
// ends, and that the far side saw an unpublish.
func TestPushToSluice(t *testing.T) {
	src, sra, _ := start(t, `publisher_grace = "0s"`)
	dst, dra, dha := start(t, "")
	pub := sluicetest.PublishLoop(t, sluicetest.Fixture("av.mp4"), "flv", "rtmp://"+sra+"/live/src")
	waitLive(t, src, "live/src")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	u, _ := url.Parse("rtmp://" + dra + "/live/fwd?token=abc")
	done := make(chan error, 1)
	var opened atomic.Int32
	go func() {
		done <- rtmp.Push(ctx, u, rtmp.ClientOptions{}, func() (*pipeline.Reader, error) {
			opened.Add(1)
			if s := dst.Graph.Hub.Stream("live/fwd"); s == nil || s.Info().State != "live" {
				t.Error("open was called before the far side accepted the publish")
			}
			return src.Graph.Gate.Play(ctx, pipeline.Request{Path: "live/src", Client: pipeline.ClientInfo{Proto: "rtmp-push", Remote: dra}})
		})
	}()

	waitLive(t, dst, "live/fwd")
	p := sluicetest.RunProbe(t, "http://"+dha+"/live/fwd.flv", 30*time.Second, "-read_intervals", "%+2", "-show_packets")
	checkPackets(t, p)

	_ = pub.Process.Kill()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Push after the stream ended: %v, want nil", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Push did not end with the stream")
	}
	if n := opened.Load(); n != 1 {
		t.Errorf("open called %d times, want 1", n)
	}
	sluicetest.Eventually(t, 5*time.Second, func() bool {
		return strings.Contains(dst.Logs.String(), "cause=unpublished")
	}, "the far side did not see the push unpublish")
}

// TestPushErrors checks Push's setup errors, that a push that never got
// its publish accepted never opened a reader, and that an error from open
// ends the push with that error and releases the far side's stream.
func TestPushErrors(t *testing.T) {
	src, sra, _ := start(t, "")
	sluicetest.PublishLoop(t, sluicetest.Fixture("av.mp4"), "flv", "rtmp://"+sra+"/live/src")
	waitLive(t, src, "live/src")
	hangUp := listener(t, func(net.Conn, <-chan struct{}) {})
	dst, dra, _ := start(t, `publisher_grace = "0s"`)
	errOpen := errors.New("no reader today")

	for _, tc := range []struct {
		name, url  string
		openErr    error
		want       error
		wantOpened bool
	}{
		{"handshake fails", "rtmp://" + hangUp + "/live/x", nil, pipeline.ErrUpstreamDown, false},
		{"publish refused", "rtmp://" + dra + "/other/x", nil, pipeline.ErrUpstreamRefused, false},
		{"open fails", "rtmp://" + dra + "/live/x", errOpen, errOpen, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := src.Graph.Hub.Stream("live/src").Info().Readers
			opened := false
			u, _ := url.Parse(tc.url)
			err := rtmp.Push(context.Background(), u, rtmp.ClientOptions{}, func() (*pipeline.Reader, error) {
				opened = true
				if tc.openErr != nil {
					return nil, tc.openErr
				}
				return src.Graph.Gate.Play(context.Background(), pipeline.Request{Path: "live/src", Client: pipeline.ClientInfo{Proto: "rtmp-push"}})
			})
			if !errors.Is(err, tc.want) {
				t.Fatalf("Push: %v, want %v", err, tc.want)
			}
			if opened != tc.wantOpened {
				t.Errorf("open called: %v, want %v", opened, tc.wantOpened)
			}
			if after := src.Graph.Hub.Stream("live/src").Info().Readers; after != before {
				t.Errorf("readers %d before, %d after: Push kept a reader", before, after)
			}
			sluicetest.Eventually(t, 5*time.Second, func() bool {
				return dst.Graph.Hub.Stream("live/x") == nil
			}, "the far side still has the stream the failed push claimed")
		})
	}
}
