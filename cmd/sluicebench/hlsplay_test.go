package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4/seekablebuffer"
	"github.com/google/go-cmp/cmp"
)

// fakeLLHLS is an in-test LL-HLS server with a video and an audio
// rendition of four 200 ms parts per segment. Each rendition makes its
// next part when a player asks for the preload hint, so the test decides
// when time passes; once, it makes two parts at once, as a server does to
// a player that was slow, so the player has a listed part to catch up on.
type fakeLLHLS struct {
	t      *testing.T
	stopAt int                // cancel when the video rendition is asked for this part
	cancel context.CancelFunc // the player's
	jumpAt int                // making this part makes the next too

	mu      sync.Mutex
	made    map[string]int      // rendition -> parts made
	fetched map[string][]int    // rendition -> parts fetched, in order
	reloads map[string][]string // rendition -> blocking reload queries, in order
}

const partsPerSegment = 4

// playlist renders the media playlist of rendition r with made parts.
func (f *fakeLLHLS) playlist(r string, made int) string {
	var b strings.Builder
	b.WriteString("#EXTM3U\n#EXT-X-VERSION:10\n#EXT-X-TARGETDURATION:1\n")
	b.WriteString("#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.6\n#EXT-X-PART-INF:PART-TARGET=0.2\n")
	b.WriteString("#EXT-X-MEDIA-SEQUENCE:0\n")
	fmt.Fprintf(&b, "#EXT-X-MAP:URI=\"%s_init.mp4\"\n", r)
	for i := range made {
		indep := ""
		if i%partsPerSegment == 0 || r == "audio" {
			indep = ",INDEPENDENT=YES"
		}
		// A signature query that changes: the player must still know the part.
		fmt.Fprintf(&b, "#EXT-X-PART:DURATION=0.2,URI=\"%s_part%d.mp4?sig=%d\"%s\n", r, i, made, indep)
		if i%partsPerSegment == partsPerSegment-1 {
			fmt.Fprintf(&b, "#EXTINF:0.8,\n%s_seg%d.mp4\n", r, i/partsPerSegment)
		}
	}
	fmt.Fprintf(&b, "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"%s_part%d.mp4\"\n", r, made)
	return b.String()
}

func (f *fakeLLHLS) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	name := strings.TrimPrefix(req.URL.Path, "/live/x/")
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case name == "index.m3u8":
		fmt.Fprint(w, "#EXTM3U\n#EXT-X-VERSION:10\n"+
			"#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio\",NAME=\"audio\",AUTOSELECT=YES,DEFAULT=YES,URI=\"audio.m3u8\"\n"+
			"#EXT-X-STREAM-INF:BANDWIDTH=500000,CODECS=\"avc1.42c028,mp4a.40.2\",AUDIO=\"audio\"\nvideo.m3u8\n")
	case strings.HasSuffix(name, ".m3u8"):
		r := strings.TrimSuffix(name, ".m3u8")
		if q := req.URL.Query(); q.Has("_HLS_msn") {
			f.reloads[r] = append(f.reloads[r], "msn="+q.Get("_HLS_msn")+" part="+q.Get("_HLS_part"))
			msn, _ := strconv.Atoi(q.Get("_HLS_msn"))
			part, _ := strconv.Atoi(q.Get("_HLS_part"))
			if msn*partsPerSegment+part >= f.made[r] {
				// The player asked before the part exists: this server
				// makes parts only on hint requests, so that is a bug.
				http.Error(w, "part not made", http.StatusServiceUnavailable)
				return
			}
		}
		fmt.Fprint(w, f.playlist(r, f.made[r]))
	case strings.HasSuffix(name, "_init.mp4"):
		w.Write(f.init(strings.TrimSuffix(name, "_init.mp4")))
	case strings.Contains(name, "_part"):
		r, num, _ := strings.Cut(strings.TrimSuffix(name, ".mp4"), "_part")
		i, _ := strconv.Atoi(num)
		switch {
		case i == f.made[r]: // the hint: it is made now
			f.made[r]++
			if i == f.jumpAt {
				f.made[r]++
			}
		case i > f.made[r]:
			http.NotFound(w, req)
			return
		}
		f.fetched[r] = append(f.fetched[r], i)
		if r == "video" && i >= f.stopAt {
			f.cancel()
		}
		w.Write(f.part(r, i))
	default:
		http.NotFound(w, req)
	}
}

func (f *fakeLLHLS) init(r string) []byte {
	in := fmp4.Init{Tracks: []*fmp4.InitTrack{{ID: 1, TimeScale: 90000, Codec: &fmp4.CodecH264{
		SPS: []byte{0x67, 0x42, 0xc0, 0x28, 0xd9, 0x00, 0x78, 0x02, 0x27, 0xe5, 0x84, 0x00, 0x00, 0x03, 0x00, 0x04, 0x00, 0x00, 0x03, 0x00, 0xf0, 0x3c, 0x60, 0xc9, 0x20},
		PPS: []byte{0x08},
	}}}}
	if r == "audio" {
		in.Tracks = []*fmp4.InitTrack{{ID: 1, TimeScale: 48000, Codec: &fmp4.CodecMPEG4Audio{
			Config: mpeg4audio.AudioSpecificConfig{Type: 2, SampleRate: 48000, ChannelConfig: 2, ChannelCount: 2},
		}}}
	}
	var buf seekablebuffer.Buffer
	if err := in.Marshal(&buf); err != nil {
		f.t.Error(err)
	}
	return buf.Bytes()
}

// part makes part i: video, six 30 fps frames (a keyframe at each segment
// start) at 10 s plus 200 ms per part, as gohlslib times them; audio, ten
// 1024-sample frames.
func (f *fakeLLHLS) part(r string, i int) []byte {
	tr := &fmp4.PartTrack{ID: 1}
	if r == "audio" {
		tr.BaseTime = uint64(i) * 9600
		for range 10 {
			tr.Samples = append(tr.Samples, &fmp4.Sample{Duration: 960, Payload: []byte{1}})
		}
	} else {
		tr.BaseTime = 900000 + uint64(i)*18000
		for j := range 6 {
			key := j == 0 && i%partsPerSegment == 0
			tr.Samples = append(tr.Samples, &fmp4.Sample{Duration: 3000, IsNonSyncSample: !key, Payload: []byte{2}})
		}
	}
	var buf seekablebuffer.Buffer
	if err := (fmp4.Part{SequenceNumber: uint32(i), Tracks: []*fmp4.PartTrack{tr}}).Marshal(&buf); err != nil {
		f.t.Error(err)
	}
	return buf.Bytes()
}

// TestHLSPlayerFollowsPreloadHints plays the fake server: the player must
// join at the newest independent part, fetch every part after it exactly
// once and in order (the hinted ones and, after the server jumped, the one
// it had not asked for), block its reloads on the hinted part, and account
// for the frames it got.
func TestHLSPlayerFollowsPreloadHints(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	f := &fakeLLHLS{t: t, stopAt: 14, jumpAt: 9, cancel: cancel,
		made:    map[string]int{"video": 6, "audio": 6},
		fetched: map[string][]int{}, reloads: map[string][]string{}}
	srv := httptest.NewServer(f)
	defer srv.Close()
	client := newHLSClient(4)
	defer client.CloseIdleConnections()

	b, _ := newTestBench()
	b.gap = time.Second
	p := &player{b: b, start: b.clock.now(), byPTS: true}
	err := (&hlsPlayer{p: p, client: client, url: srv.URL + "/live/x/index.m3u8"}).run(ctx)
	if ctx.Err() == nil {
		t.Fatalf("the player stopped before the test did: %v", err)
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	// Parts 0-5 exist at the start; part 4 begins a segment.
	var want []int
	for i := 4; i <= 14; i++ {
		want = append(want, i)
	}
	if d := cmp.Diff(want, f.fetched["video"]); d != "" {
		t.Errorf("video parts fetched (-want +got):\n%s", d)
	}
	// A reload blocks on the part just hinted: msn and part of it. Part 9
	// came with part 10, so the reload after 10 is for the hint 11.
	wantReloads := []string{"msn=1 part=2", "msn=1 part=3", "msn=2 part=0", "msn=2 part=1", "msn=2 part=3", "msn=3 part=0", "msn=3 part=1"}
	if got := f.reloads["video"]; len(got) < len(wantReloads) || !cmp.Equal(wantReloads, got[:len(wantReloads)]) {
		t.Errorf("video reloads %q, want %q first", got, wantReloads)
	}
	// Audio parts are all independent: it joins at the newest.
	if a := f.fetched["audio"]; len(a) == 0 || a[0] != 5 {
		t.Errorf("audio parts fetched %v, want from 5", a)
	}
	for r, got := range f.fetched {
		for i := 1; i < len(got); i++ {
			if got[i] != got[i-1]+1 {
				t.Errorf("%s parts fetched %v: not each once in order", r, got)
				break
			}
		}
	}
	if p.ttff.Load() == 0 || !p.playing.Load() {
		t.Fatal("no first frame")
	}
	// Parts 4-13 are read whole; part 14 may be cut by the cancel.
	if n := p.frames.Load(); n != 6*10 && n != 6*11 {
		t.Errorf("%d video frames, want 6 from each of 10 or 11 parts", n)
	}
	if p.audio.Load() == 0 || p.bytes.Load() == 0 {
		t.Errorf("%d audio frames, %d bytes", p.audio.Load(), p.bytes.Load())
	}
	if b.gaps.Load() != 0 {
		t.Errorf("%d timestamp gaps in continuous parts", b.gaps.Load())
	}
}
