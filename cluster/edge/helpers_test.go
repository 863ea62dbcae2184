package edge_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/gortmplib"
	"github.com/bluenviron/gortmplib/pkg/message"

	"github.com/sluice-media/sluice/cluster/edge"
	"github.com/sluice-media/sluice/ingest/flvhttp"
	"github.com/sluice-media/sluice/ingest/rtmp"
	"github.com/sluice-media/sluice/outputs/hls"
	"github.com/sluice-media/sluice/outputs/httpflv"
	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/sluicetest"
	"github.com/sluice-media/sluice/pipeline/sluicetest/flvget"
)

func kinds() *pipeline.Kinds {
	k := pipeline.NewKinds()
	rtmp.Register(k)
	flvhttp.Register(k)
	httpflv.Register(k)
	hls.Register(k)
	edge.Register(k)
	return k
}

// server is one Sluice under test, with the addresses it listens on.
type server struct {
	*sluicetest.Server
	rtmp, http string
}

// origin runs an origin: RTMP and FLV-over-HTTP ingest, HTTP-FLV play.
// pipelineBody goes inside its "live" pipeline.
func origin(t *testing.T, node, pipelineBody string) server {
	t.Helper()
	return start(t, node, pipelineBody)
}

// edgeServer runs an edge whose "live" pipeline has edgeBody in its
// edge "pull" block, HTTP-FLV play and HLS (a muxer per request, so that
// it does not keep a relayed stream as a reader), and pipelineBody.
func edgeServer(t *testing.T, node, edgeBody, pipelineBody string) server {
	t.Helper()
	return start(t, node, pipelineBody+`
  edge "pull" {
`+edgeBody+`
  }
  output "hls" {
    variant     = "mpegts"
    always      = false
    close_after = "2s"
  }
`)
}

func start(t *testing.T, node, pipelineBody string) server {
	t.Helper()
	return startOn(t, "127.0.0.1", node, "", pipelineBody)
}

// startOn is start on another local address than 127.0.0.1, with
// rtmpBody in the RTMP ingest block.
func startOn(t *testing.T, host, node, rtmpBody, pipelineBody string) server {
	t.Helper()
	src := fmt.Sprintf(`
server {
  node = %q
  http = "%s:0"
  api  = ""
}
ingest "rtmp" {
  listen = "%s:0"
%s
}
pipeline "live" {
  match = "live/*"
  output "http_flv" {}
%s
}
`, node, host, host, rtmpBody, pipelineBody)
	srv := sluicetest.Start(t, kinds(), src)
	return ready(t, srv)
}

// ready returns srv once its HTTP routes serve: they do once their
// stage's Run has started, a little after sluicetest.Start returns, and
// until then the router answers 404 to everything. A method no route
// takes is answered 405 once they serve.
func ready(t *testing.T, srv *sluicetest.Server) server {
	t.Helper()
	s := server{Server: srv, rtmp: srv.Addr("ingest.rtmp"), http: srv.Addr("server.http")}
	sluicetest.Eventually(t, 10*time.Second, func() bool {
		req, _ := http.NewRequest(http.MethodPut, "http://"+s.http+"/live/ready.flv", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusMethodNotAllowed
	}, "the HTTP routes never served")
	return s
}

// edgeStage returns the server's edge stage.
func (s server) edgeStage(t *testing.T) *edge.Edge {
	t.Helper()
	for _, st := range s.Graph.Stages() {
		if e, ok := st.Stage.(*edge.Edge); ok {
			return e
		}
	}
	t.Fatal("the server has no edge stage")
	return nil
}

func waitLive(t *testing.T, srv server, path string) {
	t.Helper()
	sluicetest.Eventually(t, 20*time.Second, func() bool {
		s := srv.Graph.Hub.Stream(path)
		return s != nil && s.Info().State == "live" && len(s.Info().Tracks) == 2
	}, "stream %s never went live with two tracks", path)
}

// publish starts ffmpeg pushing the looped fixture to srv's RTMP ingest
// and waits until the stream is live there.
func publish(t *testing.T, srv server, path string) {
	t.Helper()
	sluicetest.PublishLoop(t, sluicetest.Fixture("av.mp4"), "flv", "rtmp://"+srv.rtmp+"/"+path)
	waitLive(t, srv, path)
}

// playSessions is how many play sessions srv admitted over proto.
func playSessions(srv server, proto string) uint64 {
	return srv.Graph.Metrics.CounterValue("sluice_sessions_total", proto, "play")
}

// logLines returns the log lines that contain every part.
func logLines(logs string, parts ...string) []string { return sluicetest.LogLines(logs, parts...) }

// frame is one media frame a player received.
type frame struct {
	video, key bool
	dts        time.Duration
	at         time.Time
}

// player plays one stream over RTMP or HTTP-FLV and records every media
// frame's DTS and arrival time, as a viewer's player would see them.
type player struct {
	url     string
	started time.Time
	first   chan struct{} // closed at the first video frame
	done    chan struct{} // closed when the player has ended
	once    sync.Once

	mu     sync.Mutex
	frames []frame
	err    error
}

// play starts a player of u (rtmp:// or http://...flv) that stops when
// ctx ends; the test waits for it.
func play(t *testing.T, ctx context.Context, u string) *player {
	t.Helper()
	p := &player{url: u, started: time.Now(), first: make(chan struct{}), done: make(chan struct{})}
	t.Cleanup(func() { <-p.done })
	go func() {
		defer close(p.done)
		var err error
		if strings.HasPrefix(u, "rtmp://") {
			err = p.readRTMP(ctx)
		} else {
			err = p.readFLV(ctx)
		}
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
	}()
	return p
}

func (p *player) add(f frame) {
	p.mu.Lock()
	p.frames = append(p.frames, f)
	p.mu.Unlock()
	if f.video {
		p.once.Do(func() { close(p.first) })
	}
}

func (p *player) readRTMP(ctx context.Context) error {
	u, err := url.Parse(p.url)
	if err != nil {
		return err
	}
	c := &gortmplib.Client{URL: u}
	if err := c.Initialize(ctx); err != nil {
		return err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, c.Close)
	defer stop()
	for {
		_ = c.NetConn().SetReadDeadline(time.Now().Add(20 * time.Second))
		msg, err := c.Read()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		now := time.Now()
		switch m := msg.(type) {
		case *message.Video:
			if m.Type == message.VideoTypeAU {
				p.add(frame{video: true, key: m.IsKeyFrame, dts: m.DTS, at: now})
			}
		case *message.Audio:
			if m.Codec != message.CodecMPEG4Audio || m.AACType == message.AudioAACTypeAU {
				p.add(frame{dts: m.DTS, at: now})
			}
		case *message.UserControlStreamEOF:
			return errors.New("stream ended (StreamEOF)")
		}
	}
}

func (p *player) readFLV(ctx context.Context) error {
	return flvget.Read(ctx, nil, p.url, func(f flvget.Frame) error {
		p.add(frame{video: f.Video, key: f.Key, dts: time.Duration(f.Timestamp) * time.Millisecond, at: time.Now()})
		return nil
	})
}

// snapshot returns the frames so far.
func (p *player) snapshot() []frame {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.frames)
}

// ended returns the player's error once it has ended, and whether it has.
func (p *player) ended() (error, bool) {
	select {
	case <-p.done:
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.err, true
	default:
		return nil, false
	}
}

// waitFirst waits for the first video frame, failing the test if the
// player ends first or nothing comes within d.
func (p *player) waitFirst(t *testing.T, d time.Duration) time.Duration {
	t.Helper()
	select {
	case <-p.first:
		for _, f := range p.snapshot() {
			if f.video {
				return f.at.Sub(p.started)
			}
		}
	case <-p.done:
		err, _ := p.ended()
		t.Fatalf("%s: player ended before any video: %v", p.url, err)
	case <-time.After(d):
		t.Fatalf("%s: no video within %v", p.url, d)
	}
	return 0
}

// framesAfter counts the video frames that arrived after t0.
func (p *player) framesAfter(t0 time.Time) int {
	n := 0
	for _, f := range p.snapshot() {
		if f.video && f.at.After(t0) {
			n++
		}
	}
	return n
}

// monotonic checks that each track's DTS never goes back.
func monotonic(frames []frame) error {
	var last [2]time.Duration
	var seen [2]bool
	for i, f := range frames {
		k := 0
		if !f.video {
			k = 1
		}
		if seen[k] && f.dts < last[k] {
			return fmt.Errorf("frame %d: %s DTS went back from %v to %v", i, map[bool]string{true: "video", false: "audio"}[f.video], last[k], f.dts)
		}
		last[k], seen[k] = f.dts, true
	}
	return nil
}

// percentile returns the p-th percentile (0..100) of ds.
func percentile(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := (len(s)*p + 99) / 100
	return s[min(max(i-1, 0), len(s)-1)]
}
