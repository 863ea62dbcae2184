// Package feed runs synthetic publishers for tests and benchmarks: many
// real-time streams from one goroutine, without an ffmpeg each.
package feed

import (
	"context"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/media/flv"
	"github.com/sluice-media/sluice/pipeline/media/flvdemux"
	"github.com/sluice-media/sluice/pipeline/sluicetest"
)

// Options describe the streams Feed publishes.
type Options struct {
	// File is the FLV file whose tracks and access units every stream
	// carries, looped; "" is sluicetest.Fixture("bench/tiny.flv") (320x180 H.264 and
	// AAC, 80 kbit/s).
	File string
	// VideoBytes, when positive, replaces every video payload with that
	// many bytes: a higher bitrate at the same frame rate, for load runs.
	// The pictures no longer decode; the tracks and timing stay real.
	VideoBytes int
}

// Run publishes one stream per path through gate, as many publishers as
// ffmpeg would be but from one goroutine: the file's access units in real
// time, looped, with timestamps that keep increasing. It fails the test if
// a publish is refused. The returned stop ends the streams as publishers
// that leave do: it stops the goroutine, waits for it and closes the
// publishers. The test's cleanup calls it too (before a server started
// earlier stops); it is safe to call more than once.
func Run(t testing.TB, gate *pipeline.Gate, paths []string, o Options) (stop func()) {
	t.Helper()
	file := o.File
	if file == "" {
		file = sluicetest.Fixture("bench/tiny.flv")
	}
	units, meta, period := readFLV(t, file)
	if o.VideoBytes > 0 {
		pad := make([]byte, o.VideoBytes)
		for i := range pad {
			pad[i] = byte(i)
		}
		for i, au := range units {
			if au.Track.Kind() == pipeline.KindVideo {
				units[i] = &pipeline.AccessUnit{Track: au.Track, DTS: au.DTS, PTS: au.PTS, Key: au.Key, Data: pad}
			}
		}
	}
	pubs := make([]*pipeline.Publisher, 0, len(paths))
	for _, p := range paths {
		pub, err := gate.Publish(context.Background(), pipeline.Request{Path: p,
			Client: pipeline.ClientInfo{Proto: "feed", Remote: "sluicetest"}})
		if err != nil {
			t.Fatalf("feed %s: %v", p, err)
		}
		if meta != nil {
			pub.SetMetadata(meta)
		}
		pubs = append(pubs, pub)
	}
	quit := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		start := time.Now()
		timer := time.NewTimer(0)
		defer timer.Stop()
		for loop := time.Duration(0); ; loop += period {
			for _, au := range units {
				dts := loop + au.DTS
				timer.Reset(time.Until(start.Add(dts)))
				select {
				case <-quit:
					return
				case <-timer.C:
				}
				for _, pub := range pubs {
					// A unit belongs to one stream: each gets its own.
					_ = pub.Write(&pipeline.AccessUnit{Track: au.Track, DTS: dts, PTS: dts + au.PTS - au.DTS, Key: au.Key, Data: au.Data})
				}
			}
		}
	})
	var once sync.Once
	stop = func() {
		once.Do(func() {
			close(quit)
			wg.Wait()
			for _, pub := range pubs {
				pub.Close()
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// readFLV demuxes an FLV file into its access units, with DTS from 0, its
// metadata, and the duration of one loop of it (the last unit plus one
// video frame interval).
func readFLV(t testing.TB, file string) (units []*pipeline.AccessUnit, meta *pipeline.Metadata, period time.Duration) {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rec := &recorder{}
	d := flvdemux.Demuxer{Sink: rec}
	r := flv.NewReader(f, 8<<20)
	if _, err := r.ReadFileHeader(); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	for {
		tag, err := r.ReadTag()
		if err != nil {
			break
		}
		if err := d.Tag(tag); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
	}
	if len(rec.units) == 0 {
		t.Fatalf("%s: no access units", file)
	}
	first := rec.units[0].DTS
	var last, frame time.Duration
	var prevVideo time.Duration = -1
	for _, au := range rec.units {
		au.DTS -= first
		au.PTS -= first
		last = max(last, au.DTS)
		if au.Track.Kind() == pipeline.KindVideo {
			if prevVideo >= 0 && frame == 0 {
				frame = au.DTS - prevVideo
			}
			prevVideo = au.DTS
		}
	}
	if frame <= 0 {
		frame = 40 * time.Millisecond
	}
	return rec.units, rec.meta, last + frame
}

// recorder is the demuxer's sink: it keeps what the file holds.
type recorder struct {
	units []*pipeline.AccessUnit
	meta  *pipeline.Metadata
}

func (r *recorder) Write(au *pipeline.AccessUnit) error {
	r.units = append(r.units, au)
	return nil
}

func (r *recorder) SetMetadata(m *pipeline.Metadata) { r.meta = m }
