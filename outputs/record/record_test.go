package record

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/gortmplib/pkg/amf0"

	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/codec"
	"github.com/sluice-media/sluice/pipeline/sluicetest"
)

// The tests in this file publish testdata/av.mp4 into the hub directly,
// which makes segment boundaries and track changes exact; record_e2e_test.go
// does the same through RTMP with ffmpeg.

func TestRecordsOneFilePerPublish(t *testing.T) {
	fx := loadFixture(t)
	for _, format := range []string{FormatFLV, FormatMP4} {
		t.Run(format, func(t *testing.T) {
			dir := t.TempDir()
			r := newRig(t, format, func(c *MP4Config) { c.Path = dir + "/rec/{app}/{name}/{start}." + format })
			r.publish(t, "live/one", fx.play(fx.dur, nil, nil), true)
			started := r.next(t, EventStarted)
			ev := r.next(t, EventFinished)
			if ev.Err != nil || ev.Reason != "stream ended" || ev.File != started.File {
				t.Fatalf("finished event %+v", ev)
			}
			if !strings.HasPrefix(ev.File, filepath.Join(dir, "rec", "live", "one")+string(filepath.Separator)) || !strings.HasSuffix(ev.File, "Z."+format) {
				t.Fatalf("file %q is not where the template says", ev.File)
			}
			st, err := os.Stat(ev.File)
			if err != nil || st.Size() != ev.Bytes || st.Mode().Perm() != 0o644 {
				t.Fatalf("stat %s: %v (event says %d bytes)", ev.File, err, ev.Bytes)
			}
			if ev.Duration < fx.dur-100*time.Millisecond || ev.Duration > fx.dur+100*time.Millisecond {
				t.Fatalf("event duration %v, published %v", ev.Duration, fx.dur)
			}
			res := sluicetest.CheckAV(t, ev.File)
			if res.Duration < fx.dur.Seconds()-0.2 || res.Duration > fx.dur.Seconds()+0.2 {
				t.Fatalf("ffprobe duration %.3f s, published %v", res.Duration, fx.dur)
			}
			if !strings.Contains(r.logs.String(), "recording finished") || !strings.Contains(r.counter("sluice_record_files_total"), " 1") {
				t.Fatal("the finished file was not logged and counted")
			}
		})
	}
}

func TestFLVMetadataFixedUpAtClose(t *testing.T) {
	fx := loadFixture(t)
	dir := t.TempDir()
	r := newRig(t, FormatFLV, func(c *MP4Config) { c.Path = dir + "/{stream}.flv" })
	r.publish(t, "live/meta", fx.play(fx.dur, nil, nil), true)
	ev := r.next(t, EventFinished)
	data, err := os.ReadFile(ev.File)
	if err != nil {
		t.Fatal(err)
	}
	// FLV header (9) + PreviousTagSize0 (4), then the script tag.
	if len(data) < 24 || data[13] != 18 {
		t.Fatalf("the first tag is not a script tag")
	}
	size := int(data[14])<<16 | int(data[15])<<8 | int(data[16])
	meta, err := amf0.Unmarshal(data[24 : 24+size])
	if err != nil || len(meta) != 2 {
		t.Fatalf("onMetaData: %v %v", meta, err)
	}
	obj := amf0.Object(meta[1].(amf0.ECMAArray))
	if d, _ := obj.GetFloat64("duration"); d < 3.9 || d > 4.1 {
		t.Fatalf("onMetaData duration = %v, want 4 s", d)
	}
	if s, _ := obj.GetFloat64("filesize"); int(s) != len(data) {
		t.Fatalf("onMetaData filesize = %v, file is %d bytes", s, len(data))
	}
	if w, _ := obj.GetFloat64("width"); w != 320 {
		t.Fatalf("onMetaData width = %v: the tracks' description is missing", w)
	}
	sluicetest.CheckAV(t, ev.File)
}

func TestSegmentsStartAtKeyframes(t *testing.T) {
	fx := loadFixture(t)
	for _, format := range []string{FormatFLV, FormatMP4} {
		t.Run(format, func(t *testing.T) {
			dir := t.TempDir()
			r := newRig(t, format, func(c *MP4Config) {
				c.Path = dir + "/{stream}/{seq}." + format
				c.Segment = "2s"
			})
			// 6 s of media with keyframes at 0, 2 and 4 s: three files.
			r.publish(t, "live/seg", fx.play(6*time.Second, nil, nil), true)
			evs := r.finished(t, 3)
			for i, ev := range evs {
				want := "segment"
				if i == 2 {
					want = "stream ended"
				}
				if ev.Reason != want || ev.Err != nil {
					t.Fatalf("file %d: %+v", i, ev)
				}
				if !strings.HasSuffix(ev.File, []string{"0001.", "0002.", "0003."}[i]+format) {
					t.Fatalf("file %d is %q", i, ev.File)
				}
				res := sluicetest.CheckAV(t, ev.File)
				if res.Duration < 1.8 || res.Duration > 2.2 {
					t.Fatalf("%s: duration %.3f s, want 2 s", ev.File, res.Duration)
				}
				if res.FirstVideo > 0.1 {
					t.Fatalf("%s: timestamps start at %.3f s, not 0", ev.File, res.FirstVideo)
				}
			}
			if got := listFiles(t, dir); len(got) != 3 {
				t.Fatalf("files: %v", got)
			}
		})
	}
}

func TestMaxSizeCutsAtKeyframes(t *testing.T) {
	fx := loadFixture(t)
	dir := t.TempDir()
	r := newRig(t, FormatMP4, func(c *MP4Config) {
		c.Path = dir + "/{stream}/{seq}.mp4"
		c.MaxSize = "64KiB"
	})
	r.publish(t, "live/size", fx.play(2*fx.dur, nil, nil), true)
	var evs []Event
	for {
		ev := r.next(t, EventFinished)
		evs = append(evs, ev)
		if ev.Reason == "stream ended" {
			break
		}
		if ev.Reason != "segment" {
			t.Fatalf("event %+v", ev)
		}
	}
	if len(evs) < 2 {
		t.Fatalf("max_size 64KiB over ~200KB of media made %d files", len(evs))
	}
	for _, ev := range evs {
		sluicetest.CheckAV(t, ev.File)
	}
}

func TestCodecChangeStartsANewFile(t *testing.T) {
	fx := loadFixture(t)
	v := fx.video
	// Different parameters with the same SPS and PPS, so that the second
	// file still decodes.
	other := &pipeline.Track{Codec: v.Codec, Config: append(bytes.Clone(v.Config), 0), SPS: v.SPS, PPS: v.PPS, Width: v.Width, Height: v.Height}
	for _, format := range []string{FormatFLV, FormatMP4} {
		t.Run(format, func(t *testing.T) {
			dir := t.TempDir()
			r := newRig(t, format, func(c *MP4Config) { c.Path = dir + "/{stream}/{seq}." + format })
			first := fx.play(fx.dur, nil, nil)
			second := fx.play(fx.dur, other, nil)
			for _, u := range second {
				u.DTS += fx.period
				u.PTS += fx.period
			}
			r.publish(t, "live/chg", append(first, second...), true)
			evs := r.finished(t, 2)
			if evs[0].Reason != "codec change" || evs[1].Reason != "stream ended" {
				t.Fatalf("files ended with %q and %q", evs[0].Reason, evs[1].Reason)
			}
			for _, ev := range evs {
				res := sluicetest.CheckAV(t, ev.File)
				if res.Duration < 3.8 || res.Duration > 4.2 {
					t.Fatalf("%s: %.3f s, want 4 s", ev.File, res.Duration)
				}
			}
			if got := listFiles(t, dir); len(got) != 2 {
				t.Fatalf("files %v", got)
			}
		})
	}
}

// TestRepublishWithinGraceContinuesTheFile: an encoder that reconnects
// within the grace with nothing changed keeps the stream's tracks (the hub
// keeps a track whose parameters are equal), so the recording goes on in
// the same file, its timeline continuous.
func TestRepublishWithinGraceContinuesTheFile(t *testing.T) {
	fx := loadFixture(t)
	for _, format := range []string{FormatFLV, FormatMP4} {
		t.Run(format, func(t *testing.T) {
			dir := t.TempDir()
			so := pipeline.StreamOptions{Pipeline: "live", GOPCache: 10, BufferFrames: 8192, PublisherGrace: time.Minute}
			r := newRigWith(t, format, so, func(c *MP4Config) { c.Path = dir + "/{stream}/{seq}." + format })
			r.publish(t, "live/back", fx.play(fx.dur, nil, nil), true)
			r.next(t, EventStarted)
			// The encoder reconnects within the grace: the same stream for
			// players, a new publisher session with tracks of its own and
			// equal parameters.
			v, err := codec.H264FromParams(fx.video.SPS, fx.video.PPS)
			if err != nil {
				t.Fatal(err)
			}
			a, err := codec.AAC(fx.audio.Config)
			if err != nil {
				t.Fatal(err)
			}
			p := r.publish(t, "live/back", fx.play(fx.dur, v, a), true)
			p.Close()
			r.stop()
			ev := r.next(t, EventFinished)
			res := sluicetest.CheckAV(t, ev.File)
			if res.Duration < 7.8 || res.Duration > 8.4 {
				t.Fatalf("%s: %.3f s, want the 8 s of both sessions", ev.File, res.Duration)
			}
			if got := listFiles(t, dir); len(got) != 1 {
				t.Fatalf("files %v, want one", got)
			}
		})
	}
}

func TestRepublishStartsANewFile(t *testing.T) {
	fx := loadFixture(t)
	dir := t.TempDir()
	r := newRig(t, FormatFLV, func(c *MP4Config) { c.Path = dir + "/{stream}.flv" })
	r.publish(t, "live/again", fx.play(fx.dur, nil, nil), true)
	a := r.next(t, EventFinished)
	r.publish(t, "live/again", fx.play(fx.dur, nil, nil), true)
	b := r.next(t, EventFinished)
	// Same second, same name: the second file must not replace the first.
	if a.File == b.File || filepath.Join(dir, "live", "again.flv") != a.File || filepath.Join(dir, "live", "again-1.flv") != b.File {
		t.Fatalf("files %q and %q", a.File, b.File)
	}
	sluicetest.CheckAV(t, a.File)
	sluicetest.CheckAV(t, b.File)
}

func TestPathEscapesAreRefused(t *testing.T) {
	fx := loadFixture(t)
	base := t.TempDir()
	dir := filepath.Join(base, "rec")
	r := newRig(t, FormatFLV, func(c *MP4Config) { c.Path = dir + "/{app}/{name}/{start}.flv" })
	paths := []string{"live/..%2f..", "live/a/../../x", "live/../../../../tmp/x", "live/./x", "live//x", "../x/y"}
	for _, p := range paths {
		r.publish(t, p, fx.play(time.Second, nil, nil), true)
	}
	sluicetest.Eventually(t, 10*time.Second, func() bool {
		return strings.Count(r.logs.String(), "recording refused") == len(paths)
	}, "not every unsafe stream path was refused:\n%s", r.logs.String())
	if got := listFiles(t, base); len(got) != 0 {
		t.Fatalf("files were created: %v", got)
	}
	if got := r.counter("sluice_record_errors_total"); !strings.HasSuffix(got, " 6") {
		t.Fatalf("errors counter: %q", got)
	}
	// A safe stream next to them is still recorded.
	r.publish(t, "live/ok", fx.play(time.Second, nil, nil), true)
	if ev := r.next(t, EventFinished); ev.Err != nil || !strings.HasPrefix(ev.File, dir) {
		t.Fatalf("event %+v", ev)
	}
}

func TestOpenFailureStopsOnlyTheRecording(t *testing.T) {
	fx := loadFixture(t)
	dir := t.TempDir()
	// A file where the template wants the "live" directory.
	if err := os.WriteFile(filepath.Join(dir, "live"), []byte("in the way"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := newRig(t, FormatMP4, func(c *MP4Config) { c.Path = dir + "/{stream}/{start}.mp4" })
	p := r.publish(t, "live/blocked", fx.play(time.Second, nil, nil), false)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rd, err := r.hub.Play(ctx, "live/blocked", pipeline.ClientInfo{Proto: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	sluicetest.Eventually(t, 10*time.Second, func() bool { return strings.Contains(r.logs.String(), "recording stopped") },
		"the failure was not logged")
	if got := r.counter("sluice_record_errors_total"); !strings.HasSuffix(got, " 1") {
		t.Fatalf("errors counter: %q", got)
	}
	// The stream goes on for its players.
	for _, u := range fx.play(2*time.Second, nil, nil)[90:] {
		u.DTS += time.Second
		u.PTS += time.Second
		if err := p.Write(u); err != nil {
			t.Fatal(err)
		}
	}
	n := 0
	for n < 100 {
		batch, err := rd.Next(ctx)
		if err != nil {
			t.Fatalf("player: %v after %d units", err, n)
		}
		n += len(batch)
	}
	p.Close()
}

func TestShutdownFinishesFiles(t *testing.T) {
	fx := loadFixture(t)
	for _, format := range []string{FormatFLV, FormatMP4} {
		t.Run(format, func(t *testing.T) {
			dir := t.TempDir()
			r := newRig(t, format, func(c *MP4Config) {
				c.Path = dir + "/{stream}." + format
				c.Faststart = true // skipped at shutdown
			})
			p := r.publish(t, "live/bye", fx.play(fx.dur, nil, nil), false)
			r.next(t, EventStarted)
			r.stop()
			p.Close()
			ev := r.next(t, EventFinished)
			if ev.Err != nil || ev.Reason != "shutdown" {
				t.Fatalf("event %+v", ev)
			}
			res := sluicetest.CheckAV(t, ev.File)
			if res.Duration < 1 {
				t.Fatalf("duration %.3f s", res.Duration)
			}
			if format == FormatMP4 {
				if got := topBoxes(t, ev.File); len(got) < 3 || got[2] != "moof" {
					t.Fatalf("boxes %v: want the fragmented file kept at shutdown", got)
				}
			}
		})
	}
}

func TestFaststart(t *testing.T) {
	fx := loadFixture(t)
	dir := t.TempDir()
	r := newRig(t, FormatMP4, func(c *MP4Config) {
		c.Path = dir + "/{stream}/{seq}.mp4"
		c.Segment = "4s"
		c.Faststart = true
	})
	// Two files: the first is rewritten in the background while the
	// second is being recorded.
	r.publish(t, "live/fast", fx.play(2*fx.dur, nil, nil), true)
	for range 2 {
		ev := r.next(t, EventFinished)
		if ev.Err != nil {
			t.Fatal(ev.Err)
		}
		boxes := topBoxes(t, ev.File)
		if len(boxes) != 3 || boxes[0] != "ftyp" || boxes[1] != "moov" || boxes[2] != "mdat" {
			t.Fatalf("%s: top-level boxes %v, want ftyp moov mdat", ev.File, boxes)
		}
		if st, err := os.Stat(ev.File); err != nil || st.Size() != ev.Bytes {
			t.Fatalf("size %v, event %d", err, ev.Bytes)
		}
		res := sluicetest.CheckAV(t, ev.File)
		if res.Duration < 3.8 || res.Duration > 4.2 {
			t.Fatalf("duration %.3f s", res.Duration)
		}
	}
	if got := listFiles(t, dir); len(got) != 2 {
		t.Fatalf("files %v (a temporary file was left?)", got)
	}
}

func TestRetention(t *testing.T) {
	fx := loadFixture(t)
	dir := t.TempDir()
	// Someone else's file, an old recording and a young one.
	other := filepath.Join(dir, "live", "notes.txt")
	old := filepath.Join(dir, "live", "ret", "20200101T000000Z.mp4")
	young := filepath.Join(dir, "live", "ret", "20250101T000000Z.mp4")
	for _, f := range []string{other, old, young} {
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, make([]byte, 100<<10), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ancient := time.Now().Add(-30 * 24 * time.Hour)
	_ = os.Chtimes(old, ancient, ancient)
	_ = os.Chtimes(other, ancient, ancient)
	r := newRig(t, FormatMP4, func(c *MP4Config) {
		c.Path = dir + "/{stream}/{start}.mp4"
		c.MaxAge = "7d"
		c.MaxTotalSize = "150KB"
	})
	r.publish(t, "live/ret", fx.play(fx.dur, nil, nil), true)
	ev := r.next(t, EventFinished)
	// 20200101 goes for its age; then 100 KB of 20250101 and ~125 KB of
	// the new file exceed 150 KB, and 20250101 is the older.
	sluicetest.Eventually(t, 10*time.Second, func() bool { return strings.HasSuffix(r.counter("sluice_record_deleted_total"), " 2") },
		"retention did not delete the old file and then the oldest over the size limit")
	for f, want := range map[string]bool{other: true, old: false, young: false, ev.File: true} {
		if _, err := os.Stat(f); (err == nil) != want {
			t.Errorf("%s exists = %v, want %v", f, err == nil, want)
		}
	}
}

func TestWriteErrorMidFile(t *testing.T) {
	fx := loadFixture(t)
	for _, format := range []string{FormatFLV, FormatMP4} {
		t.Run(format, func(t *testing.T) {
			dir := t.TempDir()
			r := newRig(t, format, func(c *MP4Config) { c.Path = dir + "/{stream}." + format })
			units := fx.play(fx.dur, nil, nil)
			p := r.publish(t, "live/broken", units[:30], false)
			r.next(t, EventStarted)
			// The file's descriptor goes bad under the writer, as a
			// vanished disk would make it.
			sluicetest.Eventually(t, 10*time.Second, func() bool { return len(r.rec.activeFiles()) == 1 }, "no active file")
			r.rec.breakFiles()
			for _, u := range units[30:] {
				_ = p.Write(u)
			}
			ev := r.next(t, EventFinished)
			if ev.Err == nil || ev.Reason != "write error" {
				t.Fatalf("event %+v", ev)
			}
			if !strings.Contains(r.logs.String(), "recording stopped") || !strings.HasSuffix(r.counter("sluice_record_errors_total"), " 1") {
				t.Fatal("the write error was not logged and counted")
			}
			p.Close()
		})
	}
}

func TestSingleTrackStreams(t *testing.T) {
	fx := loadFixture(t)
	only := func(k pipeline.Kind, length time.Duration) []*pipeline.AccessUnit {
		var out []*pipeline.AccessUnit
		for _, u := range fx.play(length, nil, nil) {
			if u.Track.Kind() == k {
				out = append(out, u)
			}
		}
		return out
	}
	for _, format := range []string{FormatFLV, FormatMP4} {
		for _, tc := range []struct {
			name   string
			units  []*pipeline.AccessUnit
			codecs string
			dur    float64
		}{
			// Shorter than the wait for a second track: the held units
			// must still reach the file when the stream ends.
			{"video only, short", only(pipeline.KindVideo, 500*time.Millisecond), "h264", 0.5},
			{"video only", only(pipeline.KindVideo, fx.dur), "h264", 4},
			{"audio only", only(pipeline.KindAudio, fx.dur), "aac", 4},
		} {
			t.Run(format+"/"+tc.name, func(t *testing.T) {
				dir := t.TempDir()
				r := newRig(t, format, func(c *MP4Config) {
					c.Path = dir + "/{stream}/{seq}." + format
					c.Segment = "2s"
				})
				r.publish(t, "live/single", tc.units, true)
				var files []Event
				for {
					ev := r.next(t, EventFinished)
					files = append(files, ev)
					if ev.Reason == "stream ended" {
						break
					}
				}
				total := 0.0
				for _, ev := range files {
					p := sluicetest.RunProbe(t, ev.File, 30*time.Second)
					if p.Codecs() != tc.codecs {
						t.Fatalf("%s: codecs %q, want %q", ev.File, p.Codecs(), tc.codecs)
					}
					d, _ := strconv.ParseFloat(p.Format.Duration, 64)
					total += d
					if out := decodeErrors(t, ev.File); out != "" {
						t.Fatalf("%s: %s", ev.File, out)
					}
				}
				if total < tc.dur-0.1 || total > tc.dur+0.1 {
					t.Fatalf("%d files hold %.3f s, want %.1f s", len(files), total, tc.dur)
				}
				if tc.dur == 4 && len(files) != 2 {
					t.Fatalf("%d files for 4 s cut every 2 s", len(files))
				}
			})
		}
	}
}
