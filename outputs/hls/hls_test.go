package hls_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/gohlslib/v2/pkg/playlist"

	"github.com/sluice-media/sluice/ingest/rtmp"
	"github.com/sluice-media/sluice/outputs/hls"
	"github.com/sluice-media/sluice/outputs/httpflv"
	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/codec"
	"github.com/sluice-media/sluice/pipeline/config"
	"github.com/sluice-media/sluice/pipeline/sluicetest"
)

func kinds() *pipeline.Kinds {
	k := pipeline.NewKinds()
	rtmp.Register(k)
	httpflv.Register(k)
	hls.Register(k)
	return k
}

const serverHCL = `
server {
  http = "127.0.0.1:0"
  api  = ""
}
ingest "rtmp" {
  listen = "127.0.0.1:0"
}
`

// server runs Sluice with the given pipeline blocks, through BuildWith so
// that tests can give pipelines an authorizer.
type server struct {
	rtmp, http string
	hub        *pipeline.Hub
	metrics    *pipeline.Metrics
}

func start(t *testing.T, pipelines string, auth map[string]pipeline.Authorizer) *server {
	t.Helper()
	src := serverHCL + pipelines
	k := kinds()
	f, diags := config.Parse("test.hcl", []byte(src), config.Options{Kinds: k})
	if diags.HasErrors() {
		t.Fatalf("config: %s", diags.Error())
	}
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	g, diags := pipeline.BuildWith(f, k, pipeline.NewRuntime(log, nil), pipeline.BuildOptions{Authorizers: auth})
	if diags.HasErrors() {
		t.Fatalf("build: %s", diags.Error())
	}
	if err := g.Bind(); err != nil {
		t.Fatalf("bind: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("server stopped with: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Errorf("server did not stop within 15s")
		}
	})
	return &server{rtmp: g.Addr("ingest.rtmp").String(), http: g.Addr("server.http").String(), hub: g.Hub, metrics: g.Metrics}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

type response struct {
	status int
	header http.Header
	body   []byte
	took   time.Duration
}

func do(t *testing.T, method, u string) response {
	t.Helper()
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, u, err)
	}
	return response{res.StatusCode, res.Header, body, time.Since(start)}
}

func get(t *testing.T, u string) response { t.Helper(); return do(t, http.MethodGet, u) }

// waitPlaylist polls u until it answers 200.
func waitPlaylist(t *testing.T, u string) response {
	t.Helper()
	var r response
	deadline := time.Now().Add(20 * time.Second)
	for {
		r = get(t, u)
		if r.status == http.StatusOK {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never answered 200 (last %d %s)", u, r.status, r.body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// uris returns the URI lines and URI="..." attributes of a playlist.
func uris(pl []byte) []string {
	var out []string
	re := regexp.MustCompile(`URI="([^"]*)"`)
	for _, line := range strings.Split(string(pl), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "":
		case line[0] != '#':
			out = append(out, line)
		default:
			if m := re.FindStringSubmatch(line); m != nil {
				out = append(out, m[1])
			}
		}
	}
	return out
}

// mediaPlaylist follows index.m3u8 to its first media playlist URI.
func mediaPlaylist(t *testing.T, index []byte) string {
	t.Helper()
	var mv playlist.Multivariant
	if err := mv.Unmarshal(index); err != nil {
		t.Fatalf("multivariant playlist: %v\n%s", err, index)
	}
	return mv.Variants[0].URI
}

func lastSegment(t *testing.T, media []byte) string {
	t.Helper()
	var last string
	for _, u := range uris(media) {
		if strings.Contains(u, "_seg") {
			last = u
		}
	}
	if last == "" {
		t.Fatalf("no segment in playlist:\n%s", media)
	}
	return last
}

// decodeErrors returns the lines of ffmpeg's stderr that report a decoding
// problem. The null muxer's complaint about equal DTS is left out: the
// looped fixture repeats a timestamp at each loop point, and ffmpeg prints
// it for a plain RTMP play of the same stream too.
func decodeErrors(stderr string) []string {
	var bad []string
	for _, l := range strings.Split(stderr, "\n") {
		if l == "" || strings.Contains(l, "non monotonically increasing dts to muxer") {
			continue
		}
		bad = append(bad, l)
	}
	return bad
}

func checkCacheControl(t *testing.T, what string, r response, want string) {
	t.Helper()
	if got := r.header.Get("Cache-Control"); got != want {
		t.Errorf("%s: Cache-Control = %q, want %q", what, got, want)
	}
}

func checkContentType(t *testing.T, what string, r response, want string) {
	t.Helper()
	if got := r.header.Get("Content-Type"); got != want {
		t.Errorf("%s: Content-Type = %q, want %q", what, got, want)
	}
}

// TestVariantsPlayInFFmpeg publishes the fixture over RTMP to three
// pipelines, one per variant, and has ffmpeg decode six seconds of each
// and ffprobe name the codecs; along the way it checks the headers a CDN
// relies on.
func TestVariantsPlayInFFmpeg(t *testing.T) {
	dir := t.TempDir()
	srv := start(t, `
pipeline "ts" {
  match = "ts/*"
  output "hls" {
    variant   = "mpegts"
    directory = "`+dir+`"
  }
}
pipeline "fm" {
  match = "fm/*"
  output "hls" { variant = "fmp4" }
}
pipeline "ll" {
  match = "ll/*"
  output "hls" {
    variant = "lowLatency"
    segment_count = 7
    segment = "1s"
    part = "200ms"
  }
}
`, nil)
	for _, tc := range []struct {
		app, segType, segExt string
	}{
		{"ts", "video/mp2t", ".ts"},
		{"fm", "video/mp4", ".mp4"},
		{"ll", "video/mp4", ".mp4"},
	} {
		sluicetest.PublishLoop(t, sluicetest.Fixture("av.mp4"), "flv", "rtmp://"+srv.rtmp+"/"+tc.app+"/cam")
	}
	for _, tc := range []struct {
		app, segType, segExt string
	}{
		{"ts", "video/mp2t", ".ts"},
		{"fm", "video/mp4", ".mp4"},
		{"ll", "video/mp4", ".mp4"},
	} {
		t.Run(tc.app, func(t *testing.T) {
			t.Parallel()
			base := "http://" + srv.http + "/" + tc.app + "/cam/"
			index := waitPlaylist(t, base+"index.m3u8")
			checkContentType(t, "index.m3u8", index, "application/vnd.apple.mpegurl")
			checkCacheControl(t, "index.m3u8", index, "public, max-age=5")

			if h := do(t, http.MethodHead, base+"index.m3u8"); h.status != http.StatusOK || len(h.body) != 0 {
				t.Errorf("HEAD index.m3u8: %d, %d bytes", h.status, len(h.body))
			}
			mediaURI := mediaPlaylist(t, index.body)
			if strings.Contains(mediaURI, "/") || strings.Contains(mediaURI, "?") {
				t.Errorf("media playlist URI %q is not a bare relative name", mediaURI)
			}
			media := get(t, base+mediaURI)
			if media.status != http.StatusOK {
				t.Fatalf("media playlist: %d %s", media.status, media.body)
			}
			checkContentType(t, "media playlist", media, "application/vnd.apple.mpegurl")
			target := tagValue(media.body, "#EXT-X-TARGETDURATION:")
			wantAge := max(1, int(math.Round(target/2)))
			checkCacheControl(t, "media playlist", media, "public, max-age="+strconv.Itoa(wantAge))

			seg := lastSegment(t, media.body)
			if !strings.HasSuffix(seg, tc.segExt) || strings.Contains(seg, "?") {
				t.Errorf("segment URI %q: want a bare relative %s name", seg, tc.segExt)
			}
			s := get(t, base+seg)
			if s.status != http.StatusOK || len(s.body) == 0 {
				t.Fatalf("segment: %d, %d bytes", s.status, len(s.body))
			}
			checkContentType(t, "segment", s, tc.segType)
			checkCacheControl(t, "segment", s, "public, max-age=31536000, immutable")
			head := do(t, http.MethodHead, base+seg)
			if head.status != http.StatusOK || len(head.body) != 0 || head.header.Get("Content-Type") != tc.segType {
				t.Errorf("HEAD segment: %d, %d bytes, %q", head.status, len(head.body), head.header.Get("Content-Type"))
			}
			if tc.app != "ts" {
				var init string
				for _, u := range uris(media.body) {
					if strings.HasSuffix(u, "_init.mp4") {
						init = u
					}
				}
				in := get(t, base+init)
				if in.status != http.StatusOK {
					t.Fatalf("init %q: %d", init, in.status)
				}
				checkContentType(t, "init", in, "video/mp4")
				checkCacheControl(t, "init", in, "public, max-age=31536000, immutable")
			}
			if tc.app == "ts" {
				// directory = DIR also writes the segments and playlists
				// under DIR/APP/NAME.
				onDisk, err := os.ReadFile(filepath.Join(dir, "ts", "cam", strings.SplitN(seg, "?", 2)[0]))
				if err != nil || !bytes.Equal(onDisk, s.body) {
					t.Errorf("segment on disk: %v, same bytes as served: %v", err, bytes.Equal(onDisk, s.body))
				}
				if _, err := os.Stat(filepath.Join(dir, "ts", "cam", "index.m3u8")); err != nil {
					t.Errorf("playlist on disk: %v", err)
				}
			}
			if r := get(t, base+"nope_seg1"+tc.segExt); r.status != http.StatusNotFound {
				t.Errorf("unknown segment: %d, want 404", r.status)
			}

			stderr := sluicetest.Decode(t, base+"index.m3u8", 40*time.Second, "-t", "6")
			if bad := decodeErrors(stderr); len(bad) > 0 {
				t.Errorf("ffmpeg reported:\n%s", strings.Join(bad, "\n"))
			}
			p := sluicetest.RunProbe(t, base+"index.m3u8", 30*time.Second)
			codecs := map[string]bool{}
			for _, st := range p.Streams {
				codecs[st.CodecName] = true
			}
			if !codecs["h264"] || !codecs["aac"] {
				t.Errorf("ffprobe saw %v, want h264 and aac", p.Codecs())
			}
		})
	}
	t.Run("missing", func(t *testing.T) {
		r := get(t, "http://"+srv.http+"/ll/none/index.m3u8")
		if r.status != http.StatusNotFound {
			t.Fatalf("missing stream: %d, want 404", r.status)
		}
		checkCacheControl(t, "missing stream", r, "public, max-age=2")
		if r.took > time.Second {
			t.Errorf("missing stream took %v", r.took)
		}
	})
}

func tagValue(pl []byte, tag string) float64 {
	i := bytes.Index(pl, []byte(tag))
	if i < 0 {
		return -1
	}
	v := pl[i+len(tag):]
	if j := bytes.IndexAny(v, ",\r\n"); j >= 0 {
		v = v[:j]
	}
	f, err := strconv.ParseFloat(string(v), 64)
	if err != nil {
		return -1
	}
	return f
}

// aacTrack is a 48 kHz stereo AAC-LC track; the muxer does not decode
// audio, so the test can write arbitrary frames.
func aacTrack(t *testing.T) *pipeline.Track {
	tr, err := codec.AAC([]byte{0x11, 0x90})
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// TestNotReadyIsRetryable shows what a player gets from a stream that has
// no segment yet: after wait_ready, 503 with Retry-After and no-cache; and
// the playlist once the first segment is there.
func TestNotReadyIsRetryable(t *testing.T) {
	srv := start(t, `
pipeline "live" {
  match          = "live/*"
  max_reader_lag = "1m"      # the test writes seconds of audio at once,
  write_mode     = "latency" # and throughput mode wakes readers only on a later write
  output "hls" {
    variant    = "fmp4"
    wait_ready = "300ms"
  }
}
`, nil)
	p, err := srv.hub.Publish("live/radio", pipeline.ClientInfo{Proto: "test", Remote: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	tr := aacTrack(t)
	frame := time.Duration(1024) * time.Second / 48000
	write := func(from, to int) {
		for i := from; i < to; i++ {
			d := time.Duration(i) * frame
			if err := p.Write(&pipeline.AccessUnit{Track: tr, DTS: d, PTS: d, Key: true, Data: []byte{0x21, 0x10, 0x04, byte(i)}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	write(0, 1)
	u := "http://" + srv.http + "/live/radio/index.m3u8"
	var r response
	sluicetest.Eventually(t, 5*time.Second, func() bool {
		r = get(t, u)
		return r.status != http.StatusNotFound
	}, "the stream never got a muxer")
	if r.status != http.StatusServiceUnavailable {
		t.Fatalf("before the first segment: %d %s, want 503", r.status, r.body)
	}
	if r.header.Get("Retry-After") == "" || r.header.Get("Cache-Control") != "no-cache" {
		t.Errorf("503 headers: Retry-After %q, Cache-Control %q", r.header.Get("Retry-After"), r.header.Get("Cache-Control"))
	}
	if r.took < 250*time.Millisecond {
		t.Errorf("503 came after %v; the request should wait wait_ready first", r.took)
	}
	// Five seconds of audio make segments (fMP4 needs two before it lists
	// any); the playlist then answers at once.
	write(1, 5*48000/1024)
	r = waitPlaylist(t, u)
	if !bytes.Contains(r.body, []byte("mp4a.40.2")) {
		t.Errorf("index lacks the AAC codec:\n%s", r.body)
	}
}

// TestLowLatencyBlockingReload asks for the part after the newest one and
// checks that the answer waits for it and lists it, that the playlists'
// tags agree with their contents, and that delta updates work.
func TestLowLatencyBlockingReload(t *testing.T) {
	srv := start(t, `
pipeline "live" {
  match = "live/*"
  output "hls" {
    variant = "lowLatency"
    segment = "1s"
    part    = "200ms"
  }
}
`, nil)
	sluicetest.PublishLoop(t, sluicetest.Fixture("av.mp4"), "flv", "rtmp://"+srv.rtmp+"/live/ll")
	base := "http://" + srv.http + "/live/ll/"
	index := waitPlaylist(t, base+"index.m3u8")
	media := mediaPlaylist(t, index.body)

	lastSeq := -1
	var longest time.Duration
	for i := 0; i < 12; i++ {
		r := get(t, base+media)
		if r.status != http.StatusOK {
			t.Fatalf("media playlist: %d", r.status)
		}
		var pl playlist.Media
		if err := pl.Unmarshal(r.body); err != nil {
			t.Fatalf("playlist: %v\n%s", err, r.body)
		}
		validate(t, &pl, r.body)
		if pl.MediaSequence < lastSeq {
			t.Fatalf("EXT-X-MEDIA-SEQUENCE went back from %d to %d", lastSeq, pl.MediaSequence)
		}
		lastSeq = pl.MediaSequence

		// The next part: after the trailing parts of the open segment.
		msn := pl.MediaSequence + len(pl.Segments)
		part := len(pl.Parts)
		q := fmt.Sprintf("?_HLS_msn=%d&_HLS_part=%d", msn, part)
		b := get(t, base+media+q)
		longest = max(longest, b.took)
		if b.status != http.StatusOK {
			t.Fatalf("blocking reload %s: %d %s", q, b.status, b.body)
		}
		var bpl playlist.Media
		if err := bpl.Unmarshal(b.body); err != nil {
			t.Fatalf("blocking playlist: %v\n%s", err, b.body)
		}
		validate(t, &bpl, b.body)
		if !hasPart(&bpl, msn, part) {
			t.Fatalf("blocking reload %s did not return that part:\n%s", q, b.body)
		}
		if cc := b.header.Get("Cache-Control"); !strings.HasPrefix(cc, "public, max-age=") || cc == "public, max-age=0" {
			t.Errorf("blocking reload Cache-Control = %q, want cacheable", cc)
		}
		// The preload hint names the next part; fetching it blocks until
		// it exists, then returns it.
		if bpl.PreloadHint == nil {
			t.Fatalf("no EXT-X-PRELOAD-HINT:\n%s", b.body)
		}
		h := get(t, base+bpl.PreloadHint.URI)
		if h.status != http.StatusOK || len(h.body) == 0 {
			t.Fatalf("preload hint %s: %d, %d bytes", bpl.PreloadHint.URI, h.status, len(h.body))
		}
		checkCacheControl(t, "part", h, "public, max-age=31536000, immutable")
	}

	if longest < 50*time.Millisecond {
		t.Errorf("no blocking reload waited (longest %v): the server answered before the part existed", longest)
	}
	if r := get(t, base+media+"?_HLS_msn=abc"); r.status != http.StatusBadRequest {
		t.Errorf("malformed _HLS_msn: %d, want 400", r.status)
	}
	// Too far ahead is refused at once (RFC 8216bis §6.2.5.2).
	if r := get(t, base+media+"?_HLS_msn=100000&_HLS_part=0"); r.status != http.StatusBadRequest {
		t.Errorf("msn far ahead: %d, want 400", r.status)
	}
	d := get(t, base+media+"?_HLS_skip=YES")
	if d.status != http.StatusOK {
		t.Fatalf("delta update: %d", d.status)
	}
	if !bytes.Contains(d.body, []byte("#EXT-X-SKIP:SKIPPED-SEGMENTS=")) {
		t.Logf("delta update skipped nothing (window shorter than CAN-SKIP-UNTIL):\n%s", d.body)
	}
}

// hasPart reports whether pl lists part index part of segment msn.
func hasPart(pl *playlist.Media, msn, part int) bool {
	i := msn - pl.MediaSequence
	if i < len(pl.Segments) {
		return i >= 0 && part < len(pl.Segments[i].Parts)
	}
	return i == len(pl.Segments) && part < len(pl.Parts)
}

// validate checks the LL-HLS invariants of RFC 8216bis: every EXTINF
// rounded is at most EXT-X-TARGETDURATION and every part at most
// PART-TARGET.
func validate(t *testing.T, pl *playlist.Media, raw []byte) {
	t.Helper()
	for _, s := range pl.Segments {
		if s.Gap {
			continue
		}
		if d := int(math.Round(s.Duration.Seconds())); d > pl.TargetDuration {
			t.Errorf("segment %s lasts %v, over EXT-X-TARGETDURATION %d\n%s", s.URI, s.Duration, pl.TargetDuration, raw)
		}
		for _, p := range s.Parts {
			if p.Duration > pl.PartInf.PartTarget {
				t.Errorf("part %s lasts %v, over PART-TARGET %v", p.URI, p.Duration, pl.PartInf.PartTarget)
			}
		}
	}
	for _, p := range pl.Parts {
		if p.Duration > pl.PartInf.PartTarget {
			t.Errorf("part %s lasts %v, over PART-TARGET %v", p.URI, p.Duration, pl.PartInf.PartTarget)
		}
	}
}

// TestMasterGroupsRenditions publishes two renditions made by ffmpeg and
// reads them back as one master playlist with measured BANDWIDTH and the
// right RESOLUTION and CODECS; ffmpeg plays it.
func TestMasterGroupsRenditions(t *testing.T) {
	t.Parallel()
	srv := start(t, `
pipeline "live" {
  match = "live/*"
  output "hls" {
    variant = "fmp4"
    master  = true
  }
}
`, nil)
	for _, r := range []struct{ name, scale, rate string }{
		{"show_hi", "320:180", "400k"},
		{"show_lo", "160:90", "100k"},
	} {
		sluicetest.PublishLoop(t, sluicetest.Fixture("av.mp4"), "flv", "rtmp://"+srv.rtmp+"/live/"+r.name,
			"-c:v", "libx264", "-preset", "ultrafast", "-profile:v", "high", "-g", "30", "-b:v", r.rate, "-vf", "scale="+r.scale)
	}
	base := "http://" + srv.http + "/live/"
	waitPlaylist(t, base+"show_hi/index.m3u8")
	waitPlaylist(t, base+"show_lo/index.m3u8")
	r := waitPlaylist(t, base+"show/master.m3u8")
	checkContentType(t, "master", r, "application/vnd.apple.mpegurl")
	var mv playlist.Multivariant
	if err := mv.Unmarshal(r.body); err != nil {
		t.Fatalf("master: %v\n%s", err, r.body)
	}
	if len(mv.Variants) != 2 {
		t.Fatalf("master lists %d variants, want 2:\n%s", len(mv.Variants), r.body)
	}
	want := map[string]string{"show_hi": "320x180", "show_lo": "160x90"}
	bw := map[string]int{}
	for _, v := range mv.Variants {
		name := strings.Split(strings.TrimPrefix(v.URI, "../"), "/")[0]
		if want[name] == "" {
			t.Fatalf("variant URI %q is not under ../show_*/", v.URI)
		}
		if v.Resolution != want[name] {
			t.Errorf("%s: RESOLUTION %s, want %s", name, v.Resolution, want[name])
		}
		v0, _ := srv.hub.Stream("live/" + name).Tracks()
		avc := fmt.Sprintf("avc1.%02x%02x%02x", v0.SPS[1], v0.SPS[2], v0.SPS[3])
		if len(v.Codecs) != 2 || v.Codecs[0] != avc || v.Codecs[1] != "mp4a.40.2" {
			t.Errorf("%s: CODECS %v, want [%s mp4a.40.2]", name, v.Codecs, avc)
		}
		if v.AverageBandwidth == nil || *v.AverageBandwidth <= 0 || v.Bandwidth < *v.AverageBandwidth {
			t.Errorf("%s: BANDWIDTH %d, AVERAGE-BANDWIDTH %v", name, v.Bandwidth, v.AverageBandwidth)
		}
		bw[name] = v.Bandwidth
		// Players resolve the relative URI (RFC 3986 §5.2), dot segments
		// included.
		mu, _ := url.Parse(base + "show/master.m3u8")
		rel, _ := url.Parse(v.URI)
		m := get(t, mu.ResolveReference(rel).String())
		if m.status != http.StatusOK {
			t.Errorf("%s media playlist via master: %d", name, m.status)
		}
	}
	if bw["show_hi"] <= bw["show_lo"] {
		t.Errorf("BANDWIDTH of 320x180 (%d) not above 160x90 (%d)", bw["show_hi"], bw["show_lo"])
	}
	stderr := sluicetest.Decode(t, base+"show/master.m3u8", 40*time.Second, "-t", "3")
	if bad := decodeErrors(stderr); len(bad) > 0 {
		t.Errorf("ffmpeg reported:\n%s", strings.Join(bad, "\n"))
	}
	if r := get(t, base+"nothing/master.m3u8"); r.status != http.StatusNotFound {
		t.Errorf("master of no renditions: %d, want 404", r.status)
	}
}

// tokenAuth allows viewers whose query has token=good.
type tokenAuth struct {
	mu    sync.Mutex
	calls []pipeline.AuthRequest
}

func (a *tokenAuth) Authorize(_ context.Context, req pipeline.AuthRequest) pipeline.AuthDecision {
	a.mu.Lock()
	a.calls = append(a.calls, req)
	a.mu.Unlock()
	q, _ := url.ParseQuery(req.Query)
	if req.Action != pipeline.ActionPlay || q.Get("token") == "good" {
		return pipeline.AuthDecision{Allow: true}
	}
	return pipeline.AuthDecision{Reason: "bad token"}
}

func (a *tokenAuth) Notify(context.Context, pipeline.AuthRequest) {}

// TestSignedMediaURIs checks the auth scheme: the playlist is authorized
// with the viewer's query, its media URIs carry a signature that is the
// same for every viewer, and media without a valid one is refused.
func TestSignedMediaURIs(t *testing.T) {
	auth := &tokenAuth{}
	srv := start(t, `
pipeline "live" {
  match = "live/*"
  output "hls" {
    variant     = "fmp4"
    secret      = "test-secret"
    sign_window = "60s"
  }
}
`, map[string]pipeline.Authorizer{"live": auth})
	sluicetest.PublishLoop(t, sluicetest.Fixture("av.mp4"), "flv", "rtmp://"+srv.rtmp+"/live/paid")
	base := "http://" + srv.http + "/live/paid/"

	if r := get(t, base+"index.m3u8"); r.status != http.StatusForbidden {
		t.Fatalf("no token: %d, want 403", r.status)
	}
	if r := get(t, base+"index.m3u8?token=bad"); r.status != http.StatusForbidden {
		t.Fatalf("bad token: %d, want 403", r.status)
	}
	index := waitPlaylist(t, base+"index.m3u8?token=good")
	media := mediaPlaylist(t, index.body)
	if !strings.HasSuffix(media, "?token=good") {
		t.Fatalf("media playlist URI %q does not keep the viewer's query", media)
	}
	a := get(t, base+media)
	b := get(t, base+strings.Replace(media, "token=good", "token=good&viewer=2", 1))
	if a.status != http.StatusOK || b.status != http.StatusOK {
		t.Fatalf("media playlists: %d, %d", a.status, b.status)
	}
	auth.mu.Lock()
	last := auth.calls[len(auth.calls)-1]
	auth.mu.Unlock()
	if last.Proto != "hls" || last.Action != pipeline.ActionPlay || last.Path != "live/paid" || !strings.Contains(last.Query, "token=good") {
		t.Errorf("authorizer saw %+v", last)
	}
	// Reloads with the same query within a few seconds reuse the allow.
	auth.mu.Lock()
	before := len(auth.calls)
	auth.mu.Unlock()
	for range 3 {
		if r := get(t, base+media); r.status != http.StatusOK {
			t.Fatalf("reload: %d", r.status)
		}
	}
	auth.mu.Lock()
	after := len(auth.calls)
	auth.mu.Unlock()
	if after-before > 1 {
		t.Errorf("three reloads asked the authorizer %d times; want at most once", after-before)
	}
	segA, segB := lastSegment(t, a.body), lastSegment(t, b.body)
	u, err := url.Parse(segA)
	if err != nil || u.Query().Get("sig") == "" || u.Query().Get("w") == "" || u.Query().Has("token") {
		t.Fatalf("segment URI %q: want ?w=..&sig=.. and no token", segA)
	}
	if segA != segB && strings.SplitN(segA, "?", 2)[0] == strings.SplitN(segB, "?", 2)[0] {
		t.Errorf("two viewers got different URIs for one segment: %q, %q", segA, segB)
	}
	ok := get(t, base+segA)
	if ok.status != http.StatusOK {
		t.Fatalf("signed segment: %d", ok.status)
	}
	cc := ok.header.Get("Cache-Control")
	m := regexp.MustCompile(`^public, max-age=(\d+), immutable$`).FindStringSubmatch(cc)
	if m == nil {
		t.Fatalf("signed segment Cache-Control %q", cc)
	}
	if age, _ := strconv.Atoi(m[1]); age < 1 || age > 120 {
		t.Errorf("signed segment cacheable for %ds; want at most two 60s windows", age)
	}
	name := u.Path
	w, _ := strconv.ParseInt(u.Query().Get("w"), 10, 64)
	if now := time.Now().Unix() / 60; w != now && w != now-1 {
		t.Errorf("window %d, want the current one (%d)", w, now)
	}
	if got, want := u.Query().Get("sig"), sigFor(t, "test-secret", "live/paid", w); got != want {
		t.Errorf("sig = %s, want HMAC-SHA256(secret, path|window)[:16] = %s", got, want)
	}
	signer := hls.NewSigner([]byte("test-secret"), time.Minute)
	for _, tc := range []struct{ what, query string }{
		{"no signature", ""},
		{"wrong signature", "w=" + u.Query().Get("w") + "&sig=AAAAAAAAAAAAAAAAAAAAAA"},
		{"other stream's signature", signer.Query("live/other")},
		{"expired window", "w=" + strconv.FormatInt(w-2, 10) + "&sig=" + sigFor(t, "test-secret", "live/paid", w-2)},
	} {
		r := get(t, base+name+"?"+tc.query)
		if r.status != http.StatusForbidden {
			t.Errorf("%s: %d, want 403", tc.what, r.status)
		}
	}
	stderr := sluicetest.Decode(t, base+"index.m3u8?token=good", 40*time.Second, "-t", "3")
	if bad := decodeErrors(stderr); len(bad) > 0 {
		t.Errorf("ffmpeg reported:\n%s", strings.Join(bad, "\n"))
	}
}

// sigFor computes a signature the way the Signer documents it, for a given
// window, so the test does not trust the code under test for it.
func sigFor(t *testing.T, secret, path string, w int64) string {
	t.Helper()
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(path + "|" + strconv.FormatInt(w, 10)))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil)[:16])
}
