package flvhttp_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-media/sluice/ingest/flvhttp"
	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/media/flv"
	"github.com/sluice-media/sluice/pipeline/sluicetest"
	"github.com/sluice-media/sluice/pipeline/sluicetest/feed"
)

// videoSink counts the H.264 units a pull delivers and ends the pull once
// it has want of them.
type videoSink struct {
	want   int64
	h264   atomic.Int64
	enough context.CancelFunc
}

func (s *videoSink) Write(au *pipeline.AccessUnit) error {
	if au.Track.Codec == pipeline.CodecH264 && s.h264.Add(1) == s.want {
		s.enough()
	}
	return nil
}
func (s *videoSink) SetMetadata(*pipeline.Metadata) {}
func (s *videoSink) Expect(bool, bool)              {}

// httpConns returns how many connections the origin's HTTP listener has
// accepted, and how many it serves now.
func httpConns(srv server) (accepted uint64, open float64) {
	m := srv.Graph.Metrics
	return m.CounterValue("sluice_http_connections_total"), m.Gauge("sluice_http_connections", "").With().Value()
}

// TestPullsShareOneConnection is an edge pulling 20 streams from one
// origin: with one shared NewH2CTransport every pull is a stream of one
// HTTP/2 connection, so the origin accepts exactly one TCP connection;
// with a transport per pull (HTTP/1.1) it accepts 20. Every pull must
// receive H.264 media either way. Two streams come from ffmpeg over RTMP,
// the others from synthetic publishers.
func TestPullsShareOneConnection(t *testing.T) {
	up := start(t, "127.0.0.1:0", "", "", "")
	paths := make([]string, 20)
	for i := range paths {
		paths[i] = fmt.Sprintf("live/s%02d", i)
	}
	for _, p := range paths[:2] {
		sluicetest.PublishLoop(t, sluicetest.Fixture("av.mp4"), "flv", "rtmp://"+up.rtmp+"/"+p)
	}
	feed.Run(t, up.Graph.Gate, paths[2:], feed.Options{})
	for _, p := range paths {
		waitLive(t, up, p)
	}

	for _, tc := range []struct {
		name   string
		shared bool
		want   uint64
	}{
		{"one shared h2c transport", true, 1},
		{"a transport per pull", false, 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var tr http.RoundTripper
			var h2c *flvhttp.H2CTransport
			if tc.shared {
				h2c = flvhttp.NewH2CTransport()
				tr = h2c
			}
			accepted0, open0 := httpConns(up)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			sinks := make([]*videoSink, len(paths))
			errs := make([]error, len(paths))
			var wg sync.WaitGroup
			for i, p := range paths {
				u, _ := url.Parse("http://" + up.http + "/" + p + ".flv")
				pctx, enough := context.WithCancel(ctx)
				sinks[i] = &videoSink{want: 10, enough: enough}
				wg.Go(func() {
					defer enough()
					errs[i] = flvhttp.Pull(pctx, u, flvhttp.ClientOptions{Transport: tr}, func() (pipeline.Sink, error) {
						return sinks[i], nil
					})
				})
			}
			wg.Wait()
			for i, p := range paths {
				if n := sinks[i].h264.Load(); n < sinks[i].want {
					t.Errorf("pull of %s: %d H.264 units, want %d (Pull: %v)", p, n, sinks[i].want, errs[i])
				} else if !errors.Is(errs[i], context.Canceled) {
					t.Errorf("pull of %s: %v, want context.Canceled (the test ended it)", p, errs[i])
				}
			}
			accepted, _ := httpConns(up)
			if got := accepted - accepted0; got != tc.want {
				t.Errorf("the origin accepted %d connections for %d pulls, want %d", got, len(paths), tc.want)
			}
			// Every connection goes away: the HTTP/1.1 ones with their
			// pulls, the shared one once its owner closes it.
			sluicetest.Eventually(t, 10*time.Second, func() bool {
				if h2c != nil {
					h2c.CloseIdleConnections()
				}
				_, open := httpConns(up)
				return open == open0
			}, "the origin still serves connections after the pulls ended")
		})
	}
}

// TestH2CPullOutcomes checks how pulls through a shared H2CTransport end,
// against a Sluice and scripted HTTP/2 and HTTP/1.1-only servers: each
// outcome must be the sentinel a pull over HTTP/1.1 gives, so that an
// edge handles both alike.
func TestH2CPullOutcomes(t *testing.T) {
	up := start(t, "127.0.0.1:0", "", "", "wait_publisher = \"0s\"\npublisher_grace = \"0s\"")
	stopFeed := feed.Run(t, up.Graph.Gate, []string{"live/ends"}, feed.Options{})
	waitLive(t, up, "live/ends")
	fixture, err := os.ReadFile("testdata/av.flv")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/reset.flv", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write(fixture[:len(fixture)/2])
		http.NewResponseController(w).Flush()
		panic(http.ErrAbortHandler) // RST_STREAM, as Sluice cuts a player
	})
	mux.HandleFunc("/file.flv", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(fixture) })
	h2 := httptest.NewUnstartedServer(mux)
	h2.Config.Protocols = &http.Protocols{}
	h2.Config.Protocols.SetUnencryptedHTTP2(true)
	h2.Config.ErrorLog = log.New(io.Discard, "", 0)
	h2.Start()
	defer h2.Close()
	h1 := httptest.NewServer(mux) // HTTP/1.1 only: no h2c
	defer h1.Close()

	tr := flvhttp.NewH2CTransport()
	defer tr.CloseIdleConnections()
	for _, tc := range []struct {
		name string
		url  string
		end  func() // called once the pull has media
		want error  // nil: a clean end
	}{
		{name: "missing stream", url: "http://" + up.http + "/live/none.flv", want: pipeline.ErrStreamNotFound},
		{name: "stream ended", url: "http://" + up.http + "/live/ends.flv", end: stopFeed},
		{name: "whole file", url: h2.URL + "/file.flv"},
		{name: "stream reset inside a tag", url: h2.URL + "/reset.flv", want: pipeline.ErrUpstreamDown},
		{name: "HTTP/1.1-only upstream", url: h1.URL + "/file.flv", want: pipeline.ErrUpstreamDown},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, _ := url.Parse(tc.url)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			sink := &videoSink{want: 5, enough: func() {
				if tc.end != nil {
					go tc.end()
				}
			}}
			err := flvhttp.Pull(ctx, u, flvhttp.ClientOptions{Transport: tr, IdleTimeout: 5 * time.Second}, func() (pipeline.Sink, error) {
				return sink, nil
			})
			switch {
			case tc.want == nil && err != nil:
				t.Fatalf("Pull: %v, want a clean end", err)
			case tc.want != nil && !errors.Is(err, tc.want):
				t.Fatalf("Pull: %v, want %v", err, tc.want)
			}
			var pe *flv.ParseError
			if errors.Is(tc.want, pipeline.ErrUpstreamDown) && errors.As(err, &pe) && !errors.Is(err, pipeline.ErrUpstreamDown) {
				t.Fatalf("Pull: %v: a lost stream reported as a malformed one", err)
			}
		})
	}
}

// partition is a TCP proxy to an upstream that can be cut: from cut on,
// it forwards nothing and closes nothing on the connections it carries, as
// a network partition does (no FIN, no RST). It reports each connection a
// client closed.
type partition struct {
	ln       net.Listener
	to       string
	cut      atomic.Bool
	hangups  chan struct{}
	mu       sync.Mutex
	conns    []net.Conn
	wg       sync.WaitGroup
	accepted atomic.Int64
}

func startPartition(t *testing.T, to string) *partition {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &partition{ln: ln, to: to, hangups: make(chan struct{}, 16)}
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.accepted.Add(1)
			up, err := net.Dial("tcp", to)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, up)
			p.mu.Unlock()
			p.wg.Go(func() {
				p.pipe(up, c)
				p.hangups <- struct{}{}
			})
			p.wg.Go(func() { p.pipe(c, up) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

// pipe copies from src to dst while the partition is not cut, and drops
// what it reads once it is; it closes both when src ends.
func (p *partition) pipe(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !p.cut.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// TestH2CTransportDropsDeadConnection: when the path to the origin dies
// silently, the shared connection is found dead by its health pings and
// closed, although no stream flows on it any more; the next pull dials a
// new connection and plays.
func TestH2CTransportDropsDeadConnection(t *testing.T) {
	up := start(t, "127.0.0.1:0", "", "", "")
	feed.Run(t, up.Graph.Gate, []string{"live/a"}, feed.Options{})
	waitLive(t, up, "live/a")
	p := startPartition(t, up.http)
	tr := flvhttp.NewH2CTransport()
	defer tr.CloseIdleConnections()
	u, _ := url.Parse("http://" + p.ln.Addr().String() + "/live/a.flv")
	pull := func(ctx context.Context, sink *videoSink) error {
		return flvhttp.Pull(ctx, u, flvhttp.ClientOptions{Transport: tr, IdleTimeout: 2 * time.Second}, func() (pipeline.Sink, error) {
			return sink, nil
		})
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	playing := make(chan struct{})
	sink := &videoSink{want: 5, enough: func() { close(playing) }}
	errc := make(chan error, 1)
	go func() { errc <- pull(ctx, sink) }()
	select {
	case <-playing:
	case err := <-errc:
		t.Fatalf("the first pull ended before media: %v", err)
	case <-ctx.Done():
		t.Fatal("the first pull got no media")
	}
	cutAt := time.Now()
	p.cut.Store(true)
	if err := <-errc; !errors.Is(err, pipeline.ErrUpstreamIdle) {
		t.Fatalf("the pull across the partition: %v, want ErrUpstreamIdle", err)
	}
	select {
	case <-p.hangups:
		t.Logf("the transport closed the dead connection %v after the partition", time.Since(cutAt).Round(100*time.Millisecond))
	case <-time.After(15 * time.Second):
		t.Fatal("the transport kept the dead connection 15 s after the partition")
	}

	p.cut.Store(false) // new connections get through
	again := &videoSink{want: 5}
	actx, acancel := context.WithCancel(ctx)
	again.enough = acancel
	if err := pull(actx, again); !errors.Is(err, context.Canceled) {
		t.Fatalf("the pull after the partition: %v (%d video units)", err, again.h264.Load())
	}
	if n := p.accepted.Load(); n != 2 {
		t.Errorf("%d connections through the partition, want 2: the dead one and its replacement", n)
	}
}

// TestH2CTransportFillsThenDials: requests share a connection up to the
// upstream's stream limit (SETTINGS_MAX_CONCURRENT_STREAMS), and only then
// does the transport open another; streams that end free their slots for
// the next requests.
func TestH2CTransportFillsThenDials(t *testing.T) {
	release := make(chan struct{})
	var accepted atomic.Int64
	h2 := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		http.NewResponseController(w).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	h2.Config.Protocols = &http.Protocols{}
	h2.Config.Protocols.SetUnencryptedHTTP2(true)
	h2.Config.HTTP2 = &http.HTTP2Config{MaxConcurrentStreams: 2}
	h2.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			accepted.Add(1)
		}
	}
	h2.Start()
	defer h2.Close()
	tr := flvhttp.NewH2CTransport()
	defer tr.CloseIdleConnections()

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	get := func() *http.Response {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, h2.URL+"/x.flv", nil)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatalf("GET: %v", err)
		}
		return resp
	}
	var open []*http.Response
	for range 5 {
		open = append(open, get())
	}
	if n := accepted.Load(); n != 3 {
		t.Errorf("5 streams at 2 per connection took %d connections, want 3", n)
	}
	close(release)
	for _, resp := range open {
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	for range 4 {
		resp := get()
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if n := accepted.Load(); n != 3 {
		t.Errorf("requests after the first streams ended took %d connections in all, want the 3 already open", n)
	}
}
