package record

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/config"
	"github.com/sluice-media/sluice/pipeline/sluicetest"
)

func TestParseFsync(t *testing.T) {
	for _, tc := range []struct {
		in, format string
		want       syncPolicy
		ok         bool
	}{
		{"off", FormatMP4, syncPolicy{}, true},
		{"off", FormatFLV, syncPolicy{}, true},
		{"", FormatFLV, syncPolicy{}, true},
		{"fragment", FormatMP4, syncPolicy{on: true}, true},
		{" fragment ", FormatMP4, syncPolicy{on: true}, true},
		{"fragment", FormatFLV, syncPolicy{}, false},
		{"10s", FormatFLV, syncPolicy{on: true, every: 10 * time.Second}, true},
		{"10s", FormatMP4, syncPolicy{on: true, every: 10 * time.Second}, true},
		{"100ms", FormatFLV, syncPolicy{on: true, every: 100 * time.Millisecond}, true},
		{"1h", FormatFLV, syncPolicy{on: true, every: time.Hour}, true},
		{"99ms", FormatFLV, syncPolicy{}, false},
		{"2h", FormatMP4, syncPolicy{}, false},
		{"0", FormatFLV, syncPolicy{}, false},
		{"0s", FormatMP4, syncPolicy{}, false},
		{"-1s", FormatMP4, syncPolicy{}, false},
		{"on", FormatMP4, syncPolicy{}, false},
		{"always", FormatFLV, syncPolicy{}, false},
		{"7d", FormatFLV, syncPolicy{}, false},
	} {
		t.Run(tc.format+"/"+tc.in, func(t *testing.T) {
			got, err := parseFsync(tc.in, tc.format)
			if (err == nil) != tc.ok || got != tc.want {
				t.Fatalf("parseFsync(%q, %s) = %+v, %v; want %+v, ok=%v", tc.in, tc.format, got, err, tc.want, tc.ok)
			}
			if err != nil && !strings.Contains(err.Error(), `"off"`) {
				t.Fatalf("the error does not say what to write: %v", err)
			}
			if err == nil && got.on {
				if again, err := parseFsync(got.String(), tc.format); err != nil || again != got {
					t.Fatalf("String() = %q does not parse back: %+v, %v", got.String(), again, err)
				}
			}
		})
	}
}

// TestFsyncValidateNamesTheField: a bad fsync is a diagnostic on the
// attribute, for both kinds.
func TestFsyncValidateNamesTheField(t *testing.T) {
	var m MP4Config
	m.Defaults()
	m.Fsync = "sometimes"
	var f FLVConfig
	f.Defaults()
	f.Fsync = "fragment"
	for name, err := range map[string]error{"mp4": m.Validate(), "flv": f.Validate()} {
		var fe *config.FieldError
		if !errors.As(err, &fe) || fe.Attr != "fsync" {
			t.Errorf("%s: Validate() = %v, want a FieldError on fsync", name, err)
		}
	}
	if !strings.Contains(f.Validate().Error(), "FLV has no fragments") {
		t.Errorf("the FLV error does not explain itself: %v", f.Validate())
	}
}

// TestFsyncPolicy records one publish under each policy and counts the
// fsyncs in sluice_record_fsync_seconds: one at the close always, one per
// fragment (and the init segment) with "fragment", and with an interval
// one at the first write (the header) and none again within it.
func TestFsyncPolicy(t *testing.T) {
	fx := loadFixture(t)
	for _, tc := range []struct {
		format, fsync string
		want          func(n uint64) bool
		what          string
	}{
		{FormatMP4, "off", func(n uint64) bool { return n == 1 }, "1 (the close)"},
		{FormatMP4, "fragment", func(n uint64) bool { return n >= 6 }, "at least 6 (init, 4 fragments of 1s, close)"},
		{FormatMP4, "1h", func(n uint64) bool { return n == 2 }, "2 (the init segment, the close)"},
		{FormatFLV, "off", func(n uint64) bool { return n == 1 }, "1 (the close)"},
		{FormatFLV, "1h", func(n uint64) bool { return n == 2 }, "2 (the header, the close)"},
	} {
		t.Run(tc.format+"/"+tc.fsync, func(t *testing.T) {
			dir := t.TempDir()
			r := newRig(t, tc.format, func(c *MP4Config) {
				c.Path = dir + "/{stream}/{seq}." + tc.format
				c.Fsync = tc.fsync
			})
			r.publish(t, "live/sync", fx.play(fx.dur, nil, nil), true)
			ev := r.next(t, EventFinished)
			if ev.Err != nil {
				t.Fatal(ev.Err)
			}
			n := histCount(t, r.metrics, "sluice_record_fsync_seconds", tc.format)
			if !tc.want(n) {
				t.Fatalf("%d fsyncs, want %s", n, tc.what)
			}
			sp, err := parseFsync(tc.fsync, tc.format)
			if err != nil || !strings.Contains(r.logs.String(), "fsync="+sp.String()) {
				t.Errorf("the policy is not in the start line (%v)", err)
			}
			sluicetest.CheckAV(t, ev.File)
		})
	}
}

// TestSlowFsyncLoggedOncePerFile: the first fsync over the threshold is
// logged with the file, the next ones of that file are only counted.
func TestSlowFsyncLoggedOncePerFile(t *testing.T) {
	logs := &sluicetest.LogBuffer{}
	m := pipeline.NewMetrics()
	h := &fileHandle{path: "rec/a.mp4", log: testLogger(t, logs), slow: time.Millisecond,
		fsyncs: m.Histogram("sluice_record_fsync_seconds", "", fsyncBuckets, "format").With(FormatMP4)}
	slow := func() error { time.Sleep(5 * time.Millisecond); return nil }
	for range 3 {
		if err := h.timed(slow); err != nil {
			t.Fatal(err)
		}
	}
	if n := strings.Count(logs.String(), "slow fsync"); n != 1 {
		t.Fatalf("%d slow-fsync lines for one file, want 1:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "file=rec/a.mp4") {
		t.Fatalf("the line does not name the file: %s", logs.String())
	}
	if n := histCount(t, m, "sluice_record_fsync_seconds", FormatMP4); n != 3 {
		t.Fatalf("%d fsyncs counted, want 3", n)
	}
	failed := errors.New("EIO")
	if err := h.timed(func() error { return failed }); !errors.Is(err, failed) || !strings.Contains(err.Error(), "rec/a.mp4") {
		t.Fatalf("a failed fsync returned %v", err)
	}
}

// TestRetentionDeletesStaleFaststartTemps leaves faststart temporary files
// as a crash during the rewrite leaves them (a partial file beside the
// fragmented one). The startup pass deletes the stale one; a later pass
// deletes another, but not the one beside a file this process is
// recording (its rewrite would be this process's own), nor a young one,
// nor one whose name the template could not have produced.
func TestRetentionDeletesStaleFaststartTemps(t *testing.T) {
	fx := loadFixture(t)
	dir := t.TempDir()
	stale := time.Now().Add(-2 * staleTemp)
	write := func(rel string, mod time.Time) string {
		t.Helper()
		p := filepath.Join(dir, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, make([]byte, 10<<10), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mod, mod); err != nil {
			t.Fatal(err)
		}
		return p
	}
	crashed := write("live/cam/20200101T000000Z.mp4", stale)
	crashedTmp := write("live/cam/20200101T000000Z.mp4"+faststartSuffix, stale)
	young := write("live/cam/20200102T000000Z.mp4"+faststartSuffix, time.Now().Add(-time.Minute))
	foreign := write("live/notes.txt"+faststartSuffix, stale)

	r := newRig(t, FormatMP4, func(c *MP4Config) {
		c.Path = dir + "/{stream}/{start}.mp4"
		c.Faststart = true
	})
	// The startup pass, with no retention limits set.
	sluicetest.Eventually(t, 10*time.Second, func() bool { return strings.HasSuffix(r.counter("sluice_record_temp_deleted_total"), " 1") },
		"the startup pass did not delete the stale temporary file")
	for f, want := range map[string]bool{crashed: true, crashedTmp: false, young: true, foreign: true} {
		if _, err := os.Stat(f); (err == nil) != want {
			t.Errorf("%s exists = %v, want %v", f, err == nil, want)
		}
	}
	if !strings.Contains(r.logs.String(), "stale faststart temporary file deleted") {
		t.Errorf("the deletion was not logged")
	}

	// A recording in progress, and a stale-looking temporary file beside
	// it, as its own rewrite would have it; and another crash's leftover.
	p := r.publish(t, "live/rec", fx.play(fx.dur, nil, nil), false)
	defer p.Close()
	started := r.next(t, EventStarted)
	sluicetest.Eventually(t, 10*time.Second, func() bool { return len(r.rec.activeFiles()) == 1 }, "no active file")
	liveTmp := started.File + faststartSuffix
	rel, err := filepath.Rel(dir, liveTmp)
	if err != nil {
		t.Fatal(err)
	}
	write(filepath.ToSlash(rel), stale)
	other := write("live/cam/20200103T000000Z.mp4"+faststartSuffix, stale)
	r.rec.applyRetention(context.Background(), r.rec.log)
	if _, err := os.Stat(liveTmp); err != nil {
		t.Errorf("the temporary file of the recording in progress was touched: %v", err)
	}
	if _, err := os.Stat(other); err == nil {
		t.Errorf("the second stale temporary file is still there")
	}
	if c := r.counter("sluice_record_temp_deleted_total"); !strings.HasSuffix(c, " 2") {
		t.Errorf("counter %q, want 2 deletions", c)
	}
	// A cancelled pass deletes nothing.
	last := write("live/cam/20200104T000000Z.mp4"+faststartSuffix, stale)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r.rec.applyRetention(ctx, r.rec.log)
	if _, err := os.Stat(last); err != nil {
		t.Errorf("a pass whose ctx had ended deleted a file: %v", err)
	}
}

// BenchmarkRecordFsync writes a realistic stream as fragmented MP4 into a
// temporary directory on this machine's disk, with fsync off and after
// every fragment: 3 Mbit/s of 30 fps video (a 100 kB keyframe every 2 s,
// ~11 kB frames between) plus 128 kbit/s AAC, in 2 s fragments and 5 min
// files (150 fragments). One op is one fragment, i.e. 2 s of media, so
// ns/op over 2e9 is the share of one core's (and the disk's) time a
// stream costs. fsync-p50-ms and fsync-p99-ms come from
// sluice_record_fsync_seconds (bucket-interpolated as Prometheus'
// histogram_quantile does), fsyncs/op counts them; with fsync off the only
// ones are at each file's close, which then flush the whole file. Run it
// with a fixed count, as each op writes 750 kB:
//
//	go test -run '^$' -bench RecordFsync -benchtime 300x -count 3 ./outputs/record
func BenchmarkRecordFsync(b *testing.B) {
	fx := loadFixture(b)
	gop := syntheticGOP(fx)
	var gopBytes int64
	for _, u := range gop {
		gopBytes += int64(len(u.Data))
	}
	for _, mode := range []string{fsyncOff, fsyncFragment} {
		b.Run("fsync="+mode, func(b *testing.B) {
			m := pipeline.NewMetrics()
			var mc MP4Config
			mc.Defaults()
			mc.Path = b.TempDir() + "/{stream}/{seq}.mp4"
			mc.Fragment = "2s"
			mc.Fsync = mode
			if err := mc.Validate(); err != nil {
				b.Fatal(err)
			}
			env := pipeline.Env{Log: slog.New(slog.DiscardHandler), Metrics: m, Pipeline: &config.Pipeline{Name: "live"}}
			r, err := newMP4Recorder(&mc, env, Options{})
			if err != nil {
				b.Fatal(err)
			}
			const perFile = 150
			var (
				fh  *fileHandle
				w   segmentWriter
				seq int
			)
			closeFile := func() {
				if w == nil {
					return
				}
				if err := w.finish(); err != nil {
					b.Fatal(err)
				}
				if err := fh.close(true); err != nil {
					b.Fatal(err)
				}
				w = nil
			}
			openFile := func(base time.Duration) {
				seq++
				path, err := r.set.tmpl.expand("live/bench", time.Now(), seq)
				if err != nil {
					b.Fatal(err)
				}
				if fh, err = r.createFile(r.set.tmpl.root, path, r.bytes, r.log); err != nil {
					b.Fatal(err)
				}
				if w, err = r.open(fh, [2]*pipeline.Track{pipeline.KindVideo: fx.video, pipeline.KindAudio: fx.audio}, nil, base); err != nil {
					b.Fatal(err)
				}
			}
			b.SetBytes(gopBytes)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				shift := time.Duration(i) * 2 * time.Second
				if i%perFile == 0 {
					closeFile()
					openFile(shift)
				}
				for _, u := range gop {
					au := &pipeline.AccessUnit{Track: u.Track, DTS: u.DTS + shift, PTS: u.PTS + shift, Key: u.Key, Data: u.Data}
					if err := w.add(au); err != nil {
						b.Fatal(err)
					}
				}
				i++
			}
			closeFile()
			b.ReportMetric(float64(histCount(b, m, "sluice_record_fsync_seconds", FormatMP4))/float64(i), "fsyncs/op")
			b.ReportMetric(histQuantile(b, m, "sluice_record_fsync_seconds", FormatMP4, 0.5)*1e3, "fsync-p50-ms")
			b.ReportMetric(histQuantile(b, m, "sluice_record_fsync_seconds", FormatMP4, 0.99)*1e3, "fsync-p99-ms")
		})
	}
}

// syntheticGOP is 2 s of a 3 Mbit/s, 30 fps stream with 128 kbit/s AAC,
// on the fixture's tracks, in DTS order: a 100 kB keyframe, 59 frames
// sharing the rest of the 750 kB, and an AAC frame every 1024 samples.
func syntheticGOP(fx *fixture) []*pipeline.AccessUnit {
	const (
		gopLen   = 2 * time.Second
		fps      = 30
		keyBytes = 100_000
		bitrate  = 3_000_000
	)
	frame := (bitrate/8*int(gopLen/time.Second) - keyBytes) / (fps*int(gopLen/time.Second) - 1)
	var video, audio []*pipeline.AccessUnit
	payload := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i * 7)
		}
		return b
	}
	key, inter := payload(keyBytes), payload(frame)
	for i := range fps * int(gopLen/time.Second) {
		d := time.Duration(i) * time.Second / fps
		data := inter
		if i == 0 {
			data = key
		}
		video = append(video, &pipeline.AccessUnit{Track: fx.video, DTS: d, PTS: d, Key: i == 0, Data: data})
	}
	aacFrame := payload(128_000 / 8 * 1024 / 48000)
	for i := 0; ; i++ {
		d := time.Duration(i) * 1024 * time.Second / 48000
		if d >= gopLen {
			break
		}
		audio = append(audio, &pipeline.AccessUnit{Track: fx.audio, DTS: d, PTS: d, Key: true, Data: aacFrame})
	}
	out := make([]*pipeline.AccessUnit, 0, len(video)+len(audio))
	for len(video) > 0 || len(audio) > 0 {
		if len(audio) == 0 || len(video) > 0 && video[0].DTS <= audio[0].DTS {
			out, video = append(out, video[0]), video[1:]
		} else {
			out, audio = append(out, audio[0]), audio[1:]
		}
	}
	return out
}

// histogram reads the cumulative buckets and the count of one series of
// a histogram family from the exposition.
func histogram(t testing.TB, m *pipeline.Metrics, name, format string) (les, cum []float64, count uint64) {
	t.Helper()
	var b strings.Builder
	if err := m.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	label := `format="` + format + `"`
	for _, line := range strings.Split(b.String(), "\n") {
		k, v, ok := strings.Cut(line, " ")
		if !ok || !strings.Contains(k, label) {
			continue
		}
		switch {
		case strings.HasPrefix(k, name+"_bucket{"):
			_, le, _ := strings.Cut(k, `le="`)
			le = strings.TrimSuffix(le, `"}`)
			bound, err := strconv.ParseFloat(le, 64)
			n, err2 := strconv.ParseFloat(v, 64)
			if err != nil || err2 != nil {
				t.Fatalf("bucket line %q", line)
			}
			les, cum = append(les, bound), append(cum, n)
		case strings.HasPrefix(k, name+"_count{"):
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				t.Fatalf("count line %q", line)
			}
			count = n
		}
	}
	return les, cum, count
}

func histCount(t testing.TB, m *pipeline.Metrics, name, format string) uint64 {
	t.Helper()
	_, _, n := histogram(t, m, name, format)
	return n
}

// histQuantile estimates quantile q of a histogram series as Prometheus'
// histogram_quantile does: linearly within the bucket that holds it, and
// the highest finite bound when it falls in +Inf. NaN without samples.
func histQuantile(t testing.TB, m *pipeline.Metrics, name, format string, q float64) float64 {
	t.Helper()
	les, cum, count := histogram(t, m, name, format)
	if count == 0 || len(les) == 0 {
		return math.NaN()
	}
	rank := q * float64(count)
	lower, below := 0.0, 0.0
	for i, le := range les {
		if cum[i] >= rank {
			if math.IsInf(le, 1) {
				return lower
			}
			if cum[i] == below {
				return le
			}
			return lower + (le-lower)*(rank-below)/(cum[i]-below)
		}
		lower, below = le, cum[i]
	}
	return lower
}
