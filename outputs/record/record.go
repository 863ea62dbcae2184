// Package record writes the streams of a pipeline to FLV and fragmented MP4
// files that stay playable if the server dies mid-recording.
//
// A `record "flv"` or `record "mp4"` block inside a pipeline records every
// stream of that pipeline, each publish into its own files:
//
//	record "mp4" {
//	  path     = "recordings/{app}/{name}/{start}.mp4"
//	  segment  = "10m"
//	  max_size = "0"
//	  fsync    = "fragment"
//	}
//
// # File names
//
// path is a template. {stream} is the stream path ("live/cam1", its "/"
// kept as directories), {app} its first segment, {name} the rest, {start}
// the file's start time in UTC (20261125T034501Z) and {seq} the file's
// number within the publish (0001, 0002, ...). The template's literal
// directory prefix, up to the first placeholder, is the recording root:
// templates may not contain "..", stream paths are checked with
// pipeline.ValidPath before they are used, and every expanded path is
// verified to lie below the root after cleaning, so a stream name can never
// write elsewhere. A name already taken gets "-1", "-2", ... before its
// extension. Directories are created 0755, files 0644.
//
// # Segments
//
// A file ends, and the next begins, at the first video keyframe (any unit
// for audio-only streams) after segment of media or after max_size bytes,
// when the publisher's codec parameters change, when the stream is
// published again (also by a publisher that comes back within
// publisher_grace, which players do not notice), and when the stream ends.
// Each file's timestamps start at 0.
//
// # What survives a crash
//
// Both formats are append-only while recording. FLV tags are written at the
// end of every batch the stream delivers, so after a crash the file holds
// every tag up to the last batch; its onMetaData duration and filesize stay 0
// (players compute them) because they are only filled in at a clean close.
// MP4 files are fragmented (ftyp+moov, then a moof+mdat per fragment); a
// fragment is written at every video keyframe and at least every `fragment`
// (1 s by default), so a crash loses at most the fragment in progress. With
// faststart = true, a cleanly finished MP4 is rewritten as a progressive file
// with moov first, in the background while the stream's next file records;
// the fragmented file is kept if the rewrite cannot be done, and when the
// server shuts down first (a rewrite in progress is abandoned). A crash
// during the rewrite leaves its temporary file (NAME.faststart.tmp) beside
// the recording; retention, which also runs when the block starts, deletes
// it once it has not been written for an hour.
//
// A crash of the process loses nothing the kernel already has; a power cut
// or a kernel crash can also lose what was not yet on the disk. Every file
// is fsynced (with the directories that name it) when it closes, and the
// fsync attribute does it while recording too: after every fragment
// ("fragment", MP4) or at most every interval ("10s", both formats). The
// fsyncs run on the stream's recording goroutine, so a disk too slow for
// them makes the recording lag and restart in a new file (see Failures);
// sluice_record_fsync_seconds{format} shows their latency, and the first
// fsync slower than a second is logged for each file.
//
// # Failures
//
// A file that cannot be created or written (permissions, a vanished disk)
// stops that stream's recording with an Error line and
// sluice_record_errors_total{format}; the stream and its players are not
// affected. A full disk (ENOSPC, EDQUOT) pauses it instead, with the same
// line and count once: every 5 s a new file is tried at the next keyframe,
// and the first that gets media again is logged ("recording resumed"), so
// that a stream that runs for days is recorded again once space is freed.
// The file a failure cut ends at its last complete tag or fragment; one
// that no media reached is deleted, since it would not even decode.
package record

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/sluice-media/sluice/pipeline"
)

// Format names for the two kinds, used in logs, metrics and events.
const (
	FormatFLV = "flv"
	FormatMP4 = "mp4"
)

// EventType says what an Event reports.
type EventType uint8

// The events a Recorder reports.
const (
	// EventStarted: a file was created and its header written.
	EventStarted EventType = iota + 1
	// EventFinished: a file was closed, cleanly or, when Event.Err is set,
	// because writing it failed.
	EventFinished
)

// String returns "started" or "finished".
func (t EventType) String() string {
	switch t {
	case EventStarted:
		return "started"
	case EventFinished:
		return "finished"
	}
	return fmt.Sprintf("EventType(%d)", uint8(t))
}

// Event describes one recorded file starting or finishing, for hooks that
// upload, index or announce recordings.
type Event struct {
	Type EventType
	// Stage is the record block's address, "pipeline.live.record.mp4".
	Stage string
	// Format is FormatFLV or FormatMP4.
	Format string
	// Stream is the stream path.
	Stream string
	// File is the file's path as the template expanded it.
	File string
	// Start is the wall-clock time the file was created.
	Start time.Time
	// Duration is the media time the file holds (EventFinished only).
	Duration time.Duration
	// Bytes is the file's size (EventFinished only).
	Bytes int64
	// Reason says why the file ended: "segment", "stream ended",
	// "shutdown", "codec change", "track added", "republish", "reader too
	// slow" or "write error".
	Reason string
	// Err is the error that ended the recording, nil after a clean close.
	Err error
}

// Options are the hooks a host wires into the record kinds.
type Options struct {
	// OnEvent, when set, is called for every file started and finished
	// (for EventFinished, once the file is closed and complete). It is
	// called on the goroutine recording the stream, or, for a file being
	// rewritten for faststart, on the goroutine doing that, so calls for
	// different streams (and for consecutive files of one stream) may come
	// concurrently: it must be safe for concurrent use, and it must return
	// quickly, because the recording waits for it.
	OnEvent func(Event)
}

// Register adds the "flv" and "mp4" record kinds.
func Register(k *pipeline.Kinds) { RegisterWith(k, Options{}) }

// RegisterWith is Register with hooks, for hosts (the plugin layer) that act
// on recording events.
func RegisterWith(k *pipeline.Kinds, opts Options) {
	pipeline.Add(k, "pipeline.record", FormatFLV, func(c *FLVConfig, env pipeline.Env) (pipeline.Stage, error) {
		return newFLVRecorder(c, env, opts)
	})
	pipeline.Add(k, "pipeline.record", FormatMP4, func(c *MP4Config, env pipeline.Env) (pipeline.Stage, error) {
		return newMP4Recorder(c, env, opts)
	})
}

func newFLVRecorder(c *FLVConfig, env pipeline.Env, opts Options) (*Recorder, error) {
	return newRecorder(FormatFLV, c.s, env, opts, newFLVWriter)
}

func newMP4Recorder(c *MP4Config, env pipeline.Env, opts Options) (*Recorder, error) {
	frag, faststart := c.fragment, c.Faststart
	return newRecorder(FormatMP4, c.s, env, opts, func(f *fileHandle, tr [2]*pipeline.Track, _ *pipeline.Metadata, base time.Duration) (segmentWriter, error) {
		return newMP4Writer(f, tr, base, frag, faststart)
	})
}

// Recorder is the stage of one record block: it watches its pipeline's
// streams and records each in its own goroutine.
type Recorder struct {
	format  string
	set     settings
	env     pipeline.Env
	log     *slog.Logger
	opts    Options
	open    openFunc
	errs    *pipeline.Counter
	files   *pipeline.Counter
	bytes   *pipeline.Counter
	deleted *pipeline.Counter
	dropped *pipeline.Counter
	temps   *pipeline.Counter   // stale faststart temporary files deleted
	fsyncs  *pipeline.Histogram // fsync latency
	retry   time.Duration       // diskFullRetry; tests shorten it

	mu     sync.Mutex
	active map[string]*fileHandle // files being written, which retention must not touch

	retention sync.Mutex   // one retention pass at a time
	dirs      sync.RWMutex // file creation (read) against empty-directory removal (write)
}

// openFunc starts a segmentWriter on a new file for the given tracks, whose
// timestamps are rebased so that base is 0.
type openFunc func(f *fileHandle, tracks [2]*pipeline.Track, meta *pipeline.Metadata, base time.Duration) (segmentWriter, error)

func newRecorder(format string, set settings, env pipeline.Env, opts Options, open openFunc) (*Recorder, error) {
	if env.Pipeline == nil {
		return nil, fmt.Errorf("record %q belongs inside a pipeline block", format)
	}
	m := env.Metrics
	return &Recorder{
		format:  format,
		set:     set,
		env:     env,
		log:     env.Log,
		opts:    opts,
		open:    open,
		errs:    m.Counter("sluice_record_errors_total", "Recordings stopped by a refused path or a file that could not be created or written, or paused by a full disk.", "format").With(format),
		files:   m.Counter("sluice_record_files_total", "Recording files finished.", "format").With(format),
		bytes:   m.Counter("sluice_record_bytes_total", "Bytes written to recording files.", "format").With(format),
		dropped: m.Counter("sluice_record_audio_dropped_total", "Audio units left out of recordings because their timestamp did not advance past the previous one (overlapping audio).", "format").With(format),
		deleted: m.Counter("sluice_record_deleted_total", "Recording files deleted by max_age or max_total_size.", "format").With(format),
		temps:   m.Counter("sluice_record_temp_deleted_total", "Temporary faststart files left behind by a crash and deleted by retention.", "format").With(format),
		fsyncs:  m.Histogram("sluice_record_fsync_seconds", "Time taken by each fsync of a recording file (the fsync option's and the one at every close), directories included.", fsyncBuckets, "format").With(format),
		active:  map[string]*fileHandle{},
		retry:   diskFullRetry,
	}, nil
}

// fsyncBuckets span what disks do: well under a millisecond for a
// battery-backed cache or NVMe, tens of milliseconds for a busy disk, and
// seconds for a network filesystem or a saturated one.
var fsyncBuckets = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// Root returns the recording root: the directory every file of this block
// is created below.
func (r *Recorder) Root() string { return r.set.tmpl.root }

// Run records every stream of the pipeline until ctx ends, then finishes
// the open files and returns nil once every recording goroutine has exited.
// It begins with a retention pass over the root, beside the recording, so
// that what a crash left behind (stale faststart temporary files) and what
// aged out while the server was down are cleaned without waiting for a
// file to finish.
func (r *Recorder) Run(ctx context.Context) error {
	name := r.env.Pipeline.Name
	w := r.env.Hub.Watch(func(s *pipeline.Stream) bool { return s.Options().Pipeline == name })
	defer w.Close()
	var wg sync.WaitGroup
	defer wg.Wait()
	r.log.Info("recording", "format", r.format, "path", r.set.tmpl.raw, "root", r.set.tmpl.root, "fsync", r.set.sync.String())
	wg.Go(func() { r.applyRetention(ctx, r.log) })
	// The hub delivers each stream once (Hub.Watch), so each is recorded
	// once.
	for {
		s, err := w.Next(ctx)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, pipeline.ErrHubClosed) {
				return nil
			}
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.record(ctx, s, &wg)
		}()
	}
}

func (r *Recorder) emit(ev Event) {
	if r.opts.OnEvent != nil {
		ev.Stage, ev.Format = r.env.Address, r.format
		r.opts.OnEvent(ev)
	}
}

func (r *Recorder) markActive(fh *fileHandle, on bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if on {
		r.active[fh.path] = fh
	} else {
		delete(r.active, fh.path)
	}
}

func (r *Recorder) isActive(path string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.active[path]
	return ok
}

var _ pipeline.Stage = (*Recorder)(nil)
