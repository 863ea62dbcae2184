package hls_test

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/gohlslib/v2/pkg/playlist"
	"github.com/bluenviron/gortmplib"
	"github.com/bluenviron/gortmplib/pkg/message"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"

	"github.com/sluice-media/sluice/pipeline/media/clock"
	"github.com/sluice-media/sluice/pipeline/sluicetest"
)

// TestLLHLSLatency measures how much later a video frame can be had from
// an LL-HLS part than from an RTMP play of the same stream: an RTMP player
// and an LL-HLS client that follows EXT-X-PRELOAD-HINT (the fastest a
// player can be) note the wall clock at which each frame's PTS arrives.
// It is a measurement, not a check, so it runs only when asked:
//
//	SLUICE_HLS_LATENCY=1 go test -run TestLLHLSLatency -v ./outputs/hls
//
// SLUICE_HLS_PART sets the part duration (200ms), SLUICE_HLS_WRITE_MODE the
// pipeline's write_mode (latency).
func TestLLHLSLatency(t *testing.T) {
	if os.Getenv("SLUICE_HLS_LATENCY") == "" {
		t.Skip("set SLUICE_HLS_LATENCY=1 to measure")
	}
	part := os.Getenv("SLUICE_HLS_PART")
	if part == "" {
		part = "200ms"
	}
	mode := os.Getenv("SLUICE_HLS_WRITE_MODE") // "latency" (default) or "throughput"
	if mode == "" {
		mode = "latency"
	}
	srv := start(t, `
pipeline "live" {
  match      = "live/*"
  write_mode = "`+mode+`"
  output "hls" {
    variant = "lowLatency"
    segment = "1s"
    part    = "`+part+`"
  }
}
`, nil)
	sluicetest.PublishLoop(t, sluicetest.Fixture("av.mp4"), "flv", "rtmp://"+srv.rtmp+"/live/lat")
	base := "http://" + srv.http + "/live/lat/"
	media := mediaPlaylist(t, waitPlaylist(t, base+"index.m3u8").body)

	var mu sync.Mutex
	rtmpAt := map[int64]time.Time{} // PTS in ms -> arrival
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	u, _ := url.Parse("rtmp://" + srv.rtmp + "/live/lat")
	c := &gortmplib.Client{URL: u}
	if err := c.Initialize(ctx); err != nil {
		t.Fatalf("rtmp play: %v", err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			msg, err := c.Read()
			if err != nil {
				return
			}
			if v, ok := msg.(*message.Video); ok && v.Type == message.VideoTypeAU {
				now := time.Now()
				mu.Lock()
				rtmpAt[(v.DTS + v.PTSDelta).Milliseconds()] = now
				mu.Unlock()
			}
		}
	}()
	defer func() { c.Close(); wg.Wait() }()

	var pl playlist.Media
	if err := pl.Unmarshal(get(t, base+media).body); err != nil {
		t.Fatal(err)
	}
	var lat []time.Duration
	for ctx.Err() == nil {
		hint := pl.PreloadHint.URI
		next := fmt.Sprintf("?_HLS_msn=%d&_HLS_part=%d", pl.MediaSequence+len(pl.Segments), len(pl.Parts))
		p := get(t, base+hint)
		arrived := time.Now()
		var parts fmp4.Parts
		if err := parts.Unmarshal(p.body); err != nil {
			t.Fatalf("part %s: %v", hint, err)
		}
		for _, pp := range parts {
			for _, tr := range pp.Tracks {
				dts := int64(tr.BaseTime)
				for _, s := range tr.Samples {
					// gohlslib starts fMP4 timestamps at 10 s.
					pts := clock.From90k(dts+int64(s.PTSOffset)) - 10*time.Second
					dts += int64(s.Duration)
					mu.Lock()
					at, ok := rtmpAt[pts.Milliseconds()]
					mu.Unlock()
					if ok {
						lat = append(lat, arrived.Sub(at))
					}
				}
			}
		}
		r := get(t, base+media+next)
		pl = playlist.Media{}
		if err := pl.Unmarshal(r.body); err != nil {
			t.Fatalf("playlist %s: %v: %d %s", next, err, r.status, r.body)
		}
	}
	if len(lat) < 50 {
		t.Fatalf("only %d frames matched between RTMP and LL-HLS", len(lat))
	}
	slices.Sort(lat)
	q := func(f float64) time.Duration { return lat[int(f*float64(len(lat)-1))].Round(time.Millisecond) }
	t.Logf("write_mode=%s part=%s frames=%d LL-HLS minus RTMP: min %v median %v p90 %v max %v", mode, part, len(lat), q(0), q(0.5), q(0.9), q(1))
}
