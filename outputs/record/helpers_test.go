package record

import (
	"context"
	"encoding/json"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/formats/mp4/codecs"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/pmp4"

	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/codec"
	"github.com/sluice-media/sluice/pipeline/config"
	"github.com/sluice-media/sluice/pipeline/sluicetest"
)

// fixture is testdata/av.mp4 as access units, for tests that publish into
// the hub directly.
type fixture struct {
	video, audio *pipeline.Track
	units        []*pipeline.AccessUnit // in DTS order, video before audio on ties
	dur          time.Duration          // the video track's length
	period       time.Duration          // the longest track's length: the loop period
}

var (
	fixtureOnce sync.Once
	fixtureVal  *fixture
	fixtureErr  error
)

func loadFixture(t testing.TB) *fixture {
	t.Helper()
	fixtureOnce.Do(func() { fixtureVal, fixtureErr = readFixture(sluicetest.Fixture("av.mp4")) })
	if fixtureErr != nil {
		t.Fatalf("fixture: %v", fixtureErr)
	}
	return fixtureVal
}

func readFixture(name string) (*fixture, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var p pmp4.Presentation
	if err := p.Unmarshal(f); err != nil {
		return nil, err
	}
	fx := &fixture{}
	for _, tr := range p.Tracks {
		var t *pipeline.Track
		switch c := tr.Codec.(type) {
		case *codecs.H264:
			t, err = codec.H264FromParams(c.SPS, c.PPS)
		case *codecs.MPEG4Audio:
			var asc []byte
			if asc, err = c.Config.Marshal(); err == nil {
				t, err = codec.AAC(asc)
			}
		default:
			continue
		}
		if err != nil {
			return nil, err
		}
		var dts int64
		for _, s := range tr.Samples {
			data, err := s.GetPayload()
			if err != nil {
				return nil, err
			}
			conv := func(v int64) time.Duration {
				return time.Duration(v) * time.Second / time.Duration(tr.TimeScale)
			}
			au := &pipeline.AccessUnit{Track: t, DTS: conv(dts), PTS: conv(dts + int64(s.PTSOffset)), Key: !s.IsNonSyncSample || t.Kind() == pipeline.KindAudio, Data: data}
			fx.units = append(fx.units, au)
			dts += int64(s.Duration)
		}
		end := time.Duration(dts) * time.Second / time.Duration(tr.TimeScale)
		fx.period = max(fx.period, end)
		if t.Kind() == pipeline.KindVideo {
			fx.video = t
			fx.dur = end
		} else {
			fx.audio = t
		}
	}
	sort.SliceStable(fx.units, func(i, j int) bool {
		a, b := fx.units[i], fx.units[j]
		if a.DTS != b.DTS {
			return a.DTS < b.DTS
		}
		return a.Track.Kind() == pipeline.KindVideo && b.Track.Kind() != pipeline.KindVideo
	})
	return fx, nil
}

// play returns fresh copies (Publisher.Write moves timestamps) of the
// fixture's units, looped to span length, with tracks replaced by the
// given ones where not nil. Each loop starts where the longest track
// ended, as ffmpeg's -stream_loop does, so that no track overlaps itself.
func (fx *fixture) play(length time.Duration, video, audio *pipeline.Track) []*pipeline.AccessUnit {
	var out []*pipeline.AccessUnit
	for loop := time.Duration(0); ; loop += fx.period {
		for _, u := range fx.units {
			if u.DTS+loop >= length {
				return out
			}
			c := &pipeline.AccessUnit{Track: u.Track, DTS: u.DTS + loop, PTS: u.PTS + loop, Key: u.Key, Data: u.Data}
			if c.Track.Kind() == pipeline.KindVideo && video != nil {
				c.Track = video
			}
			if c.Track.Kind() == pipeline.KindAudio && audio != nil {
				c.Track = audio
			}
			out = append(out, c)
		}
	}
}

// rig is a hub with one Recorder running on it, and what it reported.
type rig struct {
	hub     *pipeline.Hub
	metrics *pipeline.Metrics
	logs    *sluicetest.LogBuffer
	events  chan Event
	rec     *Recorder
	stop    func()
}

func testLogger(t testing.TB, logs *sluicetest.LogBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(io.MultiWriter(logs, tlogWriter{t}), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tlogWriter struct{ t testing.TB }

func (w tlogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// newRig starts a Recorder of format whose block is the defaults edited by
// edit (the FLV block takes the common fields of the MP4 one). Every path
// reaches the pipeline "live", and new readers may start 10 GOPs back, so
// that a recorder subscribing after a burst of units still sees them all.
func newRig(t *testing.T, format string, edit func(c *MP4Config)) *rig {
	t.Helper()
	return newRigWith(t, format, pipeline.StreamOptions{Pipeline: "live", GOPCache: 10, BufferFrames: 8192}, edit)
}

// newRigWith is newRig with the given stream options.
func newRigWith(t *testing.T, format string, so pipeline.StreamOptions, edit func(c *MP4Config)) *rig {
	t.Helper()
	var mc MP4Config
	mc.Defaults()
	if format == FormatFLV {
		mc.Path = strings.TrimSuffix(mc.Path, ".mp4") + ".flv"
	}
	edit(&mc)
	r := &rig{metrics: pipeline.NewMetrics(), logs: &sluicetest.LogBuffer{}, events: make(chan Event, 256)}
	log := testLogger(t, r.logs)
	resolve := func(string) (pipeline.StreamOptions, bool) { return so, true }
	r.hub = pipeline.NewHub(resolve, log.With("stage", "hub"), r.metrics)
	env := pipeline.Env{Hub: r.hub, Log: log.With("stage", "pipeline.live.record."+format), Metrics: r.metrics,
		Pipeline: &config.Pipeline{Name: "live"}, Address: "pipeline.live.record." + format}
	opts := Options{OnEvent: func(ev Event) { r.events <- ev }}
	var err error
	if format == FormatFLV {
		fc := FLVConfig{Path: mc.Path, Segment: mc.Segment, MaxSize: mc.MaxSize, MaxAge: mc.MaxAge, MaxTotalSize: mc.MaxTotalSize, Fsync: mc.Fsync}
		if err = fc.Validate(); err == nil {
			r.rec, err = newFLVRecorder(&fc, env, opts)
		}
	} else if err = mc.Validate(); err == nil {
		r.rec, err = newMP4Recorder(&mc, env, opts)
	}
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.rec.Run(ctx) }()
	// Streams that end before the Watch is set up are never seen: wait
	// for the recorder to be watching.
	sluicetest.Eventually(t, 5*time.Second, func() bool { return strings.Contains(r.logs.String(), "msg=recording ") },
		"the recorder did not start")
	var once sync.Once
	r.stop = func() {
		once.Do(func() {
			cancel()
			r.hub.Close()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Errorf("Run did not return within 10s of the cancel")
			}
		})
	}
	t.Cleanup(r.stop)
	return r
}

// publish writes units as stream path and, if end, closes the publisher.
// Once the stream is ready it waits for the recorder to subscribe (or give
// up on the stream), so that the recording starts where a live one would,
// rather than wherever the GOP cache points after a burst.
func (r *rig) publish(t *testing.T, path string, units []*pipeline.AccessUnit, end bool) *pipeline.Publisher {
	t.Helper()
	p, err := r.hub.Publish(path, pipeline.ClientInfo{Proto: "test"})
	if err != nil {
		t.Fatalf("publish %s: %v", path, err)
	}
	s := p.Stream()
	waited := false
	for _, u := range units {
		if err := p.Write(u); err != nil {
			t.Fatalf("write: %v", err)
		}
		if !waited && s.Info().State == "live" {
			waited = true
			sluicetest.Eventually(t, 5*time.Second, func() bool {
				return s.Info().Readers > 0 || strings.Contains(r.logs.String(), "recording refused")
			}, "the recorder did not subscribe to %s", path)
		}
	}
	if end {
		p.Close()
	}
	return p
}

// next waits for the next event.
func (r *rig) next(t *testing.T, typ EventType) Event {
	t.Helper()
	for {
		select {
		case ev := <-r.events:
			if ev.Type == typ {
				return ev
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("no %s event within 20s", typ)
		}
	}
}

// finished collects n EventFinished events.
func (r *rig) finished(t *testing.T, n int) []Event {
	t.Helper()
	var out []Event
	for len(out) < n {
		out = append(out, r.next(t, EventFinished))
	}
	return out
}

func (r *rig) counter(name string) string {
	var b strings.Builder
	_ = r.metrics.WriteText(&b)
	for _, line := range strings.Split(b.String(), "\n") {
		if strings.HasPrefix(line, name+"{") || strings.HasPrefix(line, name+" ") {
			return line
		}
	}
	return ""
}

// listFiles returns every regular file below dir, relative, sorted.
func listFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, filepath.ToSlash(rel))
		}
		return nil
	})
	sort.Strings(out)
	return out
}

// decodeErrors decodes file with ffmpeg and returns what it reported.
func decodeErrors(t *testing.T, file string) string {
	t.Helper()
	ffmpeg := sluicetest.Tool(t, "ffmpeg")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, ffmpeg, "-hide_banner", "-nostdin", "-v", "error", "-i", file, "-f", "null", "-").CombinedOutput()
	if err != nil {
		return string(out) + err.Error()
	}
	return strings.TrimSpace(string(out))
}

// topBoxes returns the types of the top-level boxes of an MP4 file.
func topBoxes(t *testing.T, file string) []string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for len(b) >= 8 {
		size := int(uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]))
		out = append(out, string(b[4:8]))
		if size < 8 || size > len(b) {
			break
		}
		b = b[size:]
	}
	return out
}

// ffprobeJSON runs ffprobe with args and decodes its JSON into v.
func ffprobeJSON(t *testing.T, v any, args ...string) {
	t.Helper()
	ffprobe := sluicetest.Tool(t, "ffprobe")
	out, err := exec.Command(ffprobe, append([]string{"-v", "error", "-of", "json"}, args...)...).Output()
	if err != nil {
		t.Fatalf("ffprobe %v: %v", args, err)
	}
	if err := json.Unmarshal(out, v); err != nil {
		t.Fatal(err)
	}
}
