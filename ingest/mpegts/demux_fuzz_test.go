package mpegts

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/codec"
)

// collect is a sink that keeps what a demuxer delivers.
type collect struct {
	units        []*pipeline.AccessUnit
	video, audio bool
}

func (c *collect) Expect(video, audio bool) { c.video, c.audio = video, audio }

func (c *collect) Write(au *pipeline.AccessUnit) error {
	c.units = append(c.units, au)
	return nil
}

// demuxBytes runs the demuxer over a byte stream, as an HTTP push does.
func demuxBytes(tb testing.TB, b []byte) (*collect, *Counters) {
	tb.Helper()
	m := NewCounters(pipeline.NewMetrics(), "live/fuzz")
	out := &collect{}
	d := NewStream(bytes.NewReader(b), out, slog.New(slog.DiscardHandler), m)
	if err := d.Run(); !errors.Is(err, io.EOF) {
		tb.Fatalf("run ended with %v, want io.EOF", err)
	}
	return out, m
}

func fixture(tb testing.TB, name string, n int) []byte {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		tb.Fatal(err)
	}
	return b[:min(n, len(b))]
}

// TestDemuxFixtures runs the recorded streams through the byte-stream path
// and checks what comes out, so the fuzz target's invariants are known to
// hold for good input too.
func TestDemuxFixtures(t *testing.T) {
	for _, tc := range []struct {
		file         string
		video, audio pipeline.Codec
		pictures     int
	}{
		{"h265_opus.ts", pipeline.CodecH265, pipeline.CodecOpus, 25},
		{"h264_mp3.ts", pipeline.CodecH264, pipeline.CodecMP3, 25},
	} {
		t.Run(tc.file, func(t *testing.T) {
			out, m := demuxBytes(t, fixture(t, tc.file, 1<<20))
			checkUnits(t, out.units, 1<<20)
			pics := 0
			for _, au := range out.units {
				switch au.Track.Kind() {
				case pipeline.KindVideo:
					pics++
					if au.Track.Codec != tc.video {
						t.Fatalf("video codec %v", au.Track.Codec)
					}
					if pics == 1 && !au.Key {
						t.Fatal("the first picture is not a keyframe")
					}
				case pipeline.KindAudio:
					if au.Track.Codec != tc.audio {
						t.Fatalf("audio codec %v", au.Track.Codec)
					}
				}
			}
			if pics != tc.pictures {
				t.Fatalf("%d pictures, want %d", pics, tc.pictures)
			}
			if n := m.ccErrors.Value() + m.decodeErrs.Value() + m.panics.Value(); n != 0 {
				t.Fatalf("%d errors on a clean recording", n)
			}
		})
	}
}

// checkUnits asserts what every delivered unit must satisfy, whatever the
// input: a track, a payload in the documented form, timestamps on one
// bounded timeline.
func checkUnits(t testing.TB, units []*pipeline.AccessUnit, inputLen int) {
	t.Helper()
	// Every unit costs at least a few input bytes (ADTS headers are 7).
	if len(units) > inputLen/7+1 {
		t.Fatalf("%d units from %d bytes", len(units), inputLen)
	}
	for i, au := range units {
		if au.Track == nil || len(au.Data) == 0 {
			t.Fatalf("unit %d has no track or no data", i)
		}
		switch au.Track.Codec {
		case pipeline.CodecH264, pipeline.CodecH265:
			nalus, err := codec.SplitAVCC(nil, au.Data)
			if err != nil || len(nalus) == 0 {
				t.Fatalf("unit %d: bad AVCC: %v", i, err)
			}
			if len(au.Track.Config) == 0 || len(au.Track.SPS) == 0 || len(au.Track.PPS) == 0 {
				t.Fatalf("unit %d: video track without parameters", i)
			}
		}
		// The timeline starts inside the 33-bit range (26.5 h) and each
		// unit moves it by less than the 5 s splice threshold: a
		// timeline that runs away means a clock bug.
		if bound := 27*time.Hour + time.Duration(i+1)*5*time.Second; au.DTS < -bound || au.DTS > bound {
			t.Fatalf("unit %d: DTS %v", i, au.DTS)
		}
	}
}

func FuzzDemux(f *testing.F) {
	f.Add(fixture(f, "h264_mp3.ts", 188*40))
	f.Add(fixture(f, "h265_opus.ts", 188*40))
	f.Add(bytes.Repeat([]byte{0x47, 0x1F, 0xFF, 0x10}, 47*4))
	f.Add([]byte{0x47})
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 1<<16 {
			return
		}
		out, m := demuxBytes(t, b)
		checkUnits(t, out.units, len(b))
		if n := m.panics.Value(); n != 0 {
			t.Fatalf("the demuxer panicked %d times", n)
		}
	})
}

// BenchmarkDemux measures the byte-stream path (packet checks, mediacommon's
// reader, AVCC conversion, clock) on the H.264 + MP3 recording.
func BenchmarkDemux(b *testing.B) {
	ts := fixture(b, "h264_mp3.ts", 1<<20)
	b.SetBytes(int64(len(ts)))
	b.ReportAllocs()
	for b.Loop() {
		demuxBytes(b, ts)
	}
}
