package httpflv_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/sluice-media/sluice/outputs/httpflv"
	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/media/flv"
	"github.com/sluice-media/sluice/pipeline/sluicetest"
	"github.com/sluice-media/sluice/pipeline/sluicetest/feed"
)

// origin runs a server with the HTTP-FLV output and feeds live/a.
type origin struct {
	srv  *sluicetest.Server
	base string // http://host:port
	stop func() // ends live/a as a publisher leaving does
}

func startOrigin(t *testing.T, output string, opts feed.Options) origin {
	t.Helper()
	k := pipeline.NewKinds()
	httpflv.Register(k)
	srv := sluicetest.Start(t, k, fmt.Sprintf(`
server {
  http = "127.0.0.1:0"
  api  = ""
}
pipeline "live" {
  match           = ["live/*"]
  publisher_grace = "0s"
  output "http_flv" {
    %s
  }
}
`, output))
	stop := feed.Run(t, srv.Graph.Gate, []string{"live/a"}, opts)
	sluicetest.Eventually(t, 10*time.Second, func() bool {
		s := srv.Graph.Hub.Stream("live/a")
		return s != nil && s.Info().State == "live"
	}, "live/a never went live")
	return origin{srv: srv, base: "http://" + srv.Addr("server.http"), stop: stop}
}

// closedAs returns how many HTTP-FLV plays ended with cause.
func (o origin) closedAs(cause string) uint64 {
	return o.srv.Graph.Metrics.CounterValue("sluice_sessions_closed_total", "http-flv", "play", cause)
}

// client returns an HTTP client that speaks proto ("HTTP/1.1", or
// "HTTP/2.0": cleartext HTTP/2 with prior knowledge). cfg tunes HTTP/2.
func client(t *testing.T, proto string, cfg *http.HTTP2Config) *http.Client {
	var p http.Protocols
	if proto == "HTTP/2.0" {
		p.SetUnencryptedHTTP2(true)
	} else {
		p.SetHTTP1(true)
	}
	tr := &http.Transport{Protocols: &p, HTTP2: cfg}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// play requests path and checks the answer's head; the caller reads and
// closes the body.
func play(t *testing.T, ctx context.Context, c *http.Client, url, proto string) *http.Response {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	if resp.StatusCode != http.StatusOK || resp.Proto != proto {
		resp.Body.Close()
		t.Fatalf("GET %s: %s %s, want %s 200", url, resp.Proto, resp.Status, proto)
	}
	for k, want := range map[string]string{
		"Content-Type":                "video/x-flv",
		"Cache-Control":               "no-cache, no-store",
		"Access-Control-Allow-Origin": "*", // from the router, hijacked or not
	} {
		if got := resp.Header.Get(k); got != want {
			t.Errorf("%s: %s %q, want %q", proto, k, got, want)
		}
	}
	return resp
}

// flvPlayer reads an FLV body as a player does and checks it: the first
// video tag is the sequence header, the first frame a keyframe, and video
// timestamps never go back.
type flvPlayer struct {
	r      *flv.Reader
	frames int
	last   uint32
}

func newFLVPlayer(t *testing.T, body io.Reader) *flvPlayer {
	t.Helper()
	r := flv.NewReader(bufio.NewReader(body), 4<<20)
	h, err := r.ReadFileHeader()
	if err != nil {
		t.Fatalf("FLV header: %v", err)
	}
	if !h.HasVideo || !h.HasAudio {
		t.Errorf("FLV header announces video %v, audio %v; want both", h.HasVideo, h.HasAudio)
	}
	return &flvPlayer{r: r}
}

// errBadStream marks what the player found wrong in the stream, as
// opposed to how the body ended.
var errBadStream = errors.New("bad stream")

// read reads n more tags (n < 0: until the body ends) and returns how the
// body ended: nil when it ended cleanly between tags or n tags were read,
// an errBadStream when the stream broke a rule. It may run on any
// goroutine.
func (p *flvPlayer) read(n int) error {
	frames := p.frames
	for i := 0; n < 0 || i < n; i++ {
		tag, err := p.r.ReadTag()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if tag.Type != flv.TagVideo {
			continue
		}
		v, err := flv.ParseVideo(tag.Data)
		if err != nil {
			return fmt.Errorf("%w: video tag: %w", errBadStream, err)
		}
		switch {
		case v.PacketType == flv.PacketSequenceStart:
			if p.frames > 0 {
				return fmt.Errorf("%w: a sequence header after %d frames", errBadStream, p.frames)
			}
			continue
		case p.frames == 0 && !v.Key:
			return fmt.Errorf("%w: the first frame is not a keyframe", errBadStream)
		case tag.Timestamp < p.last:
			return fmt.Errorf("%w: video timestamp went back from %d to %d", errBadStream, p.last, tag.Timestamp)
		}
		p.frames++
		p.last = tag.Timestamp
	}
	if p.frames == frames {
		return fmt.Errorf("%w: %d tags and no video frame", errBadStream, n)
	}
	return nil
}

// TestPlayEnds plays the same stream over HTTP/1.1 (a hijacked, chunked
// connection) and over cleartext HTTP/2 (one stream of a shared
// connection, through the response writer) and ends the session each way
// it can end. Both protocols must agree on the cause counted and on what
// the player sees: a clean end (the last chunk, END_STREAM) when the
// stream is over or the server stops, so that a player or an edge knows
// the stream ended rather than broke.
func TestPlayEnds(t *testing.T) {
	for _, proto := range []string{"HTTP/1.1", "HTTP/2.0"} {
		for _, tc := range []struct {
			name  string
			end   func(o origin, cancel context.CancelFunc)
			cause string
			clean bool // the body ends cleanly; false: the client ended it
		}{
			{"stream ended", func(o origin, _ context.CancelFunc) { o.stop() }, pipeline.CauseStreamEnded, true},
			{"server stopped", func(o origin, _ context.CancelFunc) { _ = o.srv.Stop() }, pipeline.CauseShutdown, true},
			{"player left", func(_ origin, cancel context.CancelFunc) { cancel() }, pipeline.CauseClientClosed, false},
		} {
			t.Run(proto+"/"+tc.name, func(t *testing.T) {
				o := startOrigin(t, "", feed.Options{})
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				resp := play(t, ctx, client(t, proto, nil), o.base+"/live/a.flv", proto)
				defer resp.Body.Close()
				p := newFLVPlayer(t, resp.Body)
				if err := p.read(30); err != nil {
					t.Fatalf("reading the stream: %v", err)
				}
				tc.end(o, cancel)
				err := p.read(-1)
				switch {
				case errors.Is(err, errBadStream):
					t.Fatal(err)
				case tc.clean && err != nil:
					t.Errorf("the body ended with %v, want a clean end", err)
				case !tc.clean && err == nil:
					t.Errorf("the body ended cleanly after the client cancelled")
				}
				sluicetest.Eventually(t, 10*time.Second, func() bool { return o.closedAs(tc.cause) == 1 },
					"no play counted as %s", tc.cause)
				for _, other := range []string{pipeline.CauseStreamEnded, pipeline.CauseShutdown, pipeline.CauseClientClosed, pipeline.CauseTimeout, pipeline.CauseTooSlow} {
					if n := o.closedAs(other); other != tc.cause && n != 0 {
						t.Errorf("%d plays counted as %s, want only %s", n, other, tc.cause)
					}
				}
			})
		}
	}
}

// TestHTTP2StreamsShareAConnection: players on one HTTP/2 connection are
// independent streams: one leaving does not disturb the others, and the
// listener counts one connection for all of them.
func TestHTTP2StreamsShareAConnection(t *testing.T) {
	o := startOrigin(t, "", feed.Options{})
	m := o.srv.Graph.Metrics
	before := m.CounterValue("sluice_http_connections_total")
	c := client(t, "HTTP/2.0", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var players []*flvPlayer
	var cancels []context.CancelFunc
	for range 3 {
		pctx, pcancel := context.WithCancel(ctx)
		defer pcancel()
		resp := play(t, pctx, c, o.base+"/live/a.flv", "HTTP/2.0")
		defer resp.Body.Close()
		players, cancels = append(players, newFLVPlayer(t, resp.Body)), append(cancels, pcancel)
	}
	for _, p := range players {
		if err := p.read(20); err != nil {
			t.Fatalf("reading the stream: %v", err)
		}
	}
	cancels[0]()
	sluicetest.Eventually(t, 10*time.Second, func() bool { return o.closedAs(pipeline.CauseClientClosed) == 1 },
		"the player that left was not counted as client_closed")
	for i, p := range players[1:] {
		if err := p.read(20); err != nil {
			t.Fatalf("player %d after another left: %v", i+1, err)
		}
	}
	if got := m.CounterValue("sluice_http_connections_total") - before; got != 1 {
		t.Errorf("3 HTTP/2 players made %d connections, want 1", got)
	}
}

// TestHTTP2WriteTimeout: an HTTP/2 player that stops reading is cut after
// write_timeout by a reset of its stream alone, counted as a timeout, and
// sees its stream broken (RST_STREAM), not ended. A player that reads on
// another stream of the same connection keeps playing. A pause longer than
// the write timeout with nothing to write cuts nobody.
func TestHTTP2WriteTimeout(t *testing.T) {
	// 20 kB frames at 15 fps fill the 64 kB stream window in a few frames.
	o := startOrigin(t, `write_timeout = "1s"`, feed.Options{VideoBytes: 20000})
	c := client(t, "HTTP/2.0", &http.HTTP2Config{MaxReceiveBufferPerStream: 64 << 10, MaxReceiveBufferPerConnection: 1 << 20})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stuck := play(t, ctx, c, o.base+"/live/a.flv", "HTTP/2.0")
	defer stuck.Body.Close()
	reading := play(t, ctx, c, o.base+"/live/a.flv", "HTTP/2.0")
	defer reading.Body.Close()
	done := make(chan error, 1)
	p := newFLVPlayer(t, reading.Body)
	go func() { done <- p.read(150) }() // 5 s of video and audio
	sluicetest.Eventually(t, 10*time.Second, func() bool { return o.closedAs(pipeline.CauseTimeout) == 1 },
		"the player that stopped reading was not cut for a timeout")
	if _, err := io.Copy(io.Discard, stuck.Body); err == nil {
		t.Errorf("the cut player's body ended cleanly; want a reset stream")
	}
	if err := <-done; err != nil {
		t.Errorf("the player that kept reading: %v", err)
	}
	if n := o.closedAs(pipeline.CauseTimeout); n != 1 {
		t.Errorf("%d plays cut for a timeout, want 1", n)
	}
}

// TestHTTP2IdleIsNotATimeout: a player waits longer than write_timeout
// for its stream's next unit (a publisher pausing): with nothing to write,
// nothing times out, and the stream goes on when media comes back.
func TestHTTP2IdleIsNotATimeout(t *testing.T) {
	k := pipeline.NewKinds()
	httpflv.Register(k)
	srv := sluicetest.Start(t, k, `
server {
  http = "127.0.0.1:0"
  api  = ""
}
pipeline "live" {
  match           = ["live/*"]
  publisher_grace = "10s"
  output "http_flv" {
    write_timeout = "500ms"
  }
}
`)
	base := "http://" + srv.Addr("server.http")
	stop := feed.Run(t, srv.Graph.Gate, []string{"live/a"}, feed.Options{})
	sluicetest.Eventually(t, 10*time.Second, func() bool {
		s := srv.Graph.Hub.Stream("live/a")
		return s != nil && s.Info().State == "live"
	}, "live/a never went live")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp := play(t, ctx, client(t, "HTTP/2.0", nil), base+"/live/a.flv", "HTTP/2.0")
	defer resp.Body.Close()
	p := newFLVPlayer(t, resp.Body)
	if err := p.read(20); err != nil {
		t.Fatal(err)
	}
	stop() // the publisher leaves; the player is held for the grace
	// The pause itself is what is tested: three write timeouts long, with
	// nothing to write.
	time.Sleep(1500 * time.Millisecond)
	feed.Run(t, srv.Graph.Gate, []string{"live/a"}, feed.Options{})
	if err := p.read(40); err != nil {
		t.Fatalf("after the pause: %v", err)
	}
	if n := srv.Graph.Metrics.CounterValue("sluice_sessions_closed_total", "http-flv", "play", pipeline.CauseTimeout); n != 0 {
		t.Errorf("%d plays cut for a timeout during a pause", n)
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatal("the test ran out of time")
	}
}
