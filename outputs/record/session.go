package record

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sluice-media/sluice/pipeline"
)

// segmentWriter writes one file of one format. Its methods are called from
// the recording goroutine only.
type segmentWriter interface {
	// add queues an access unit, whose DTS is at or after the file's base
	// and whose track is one the file was opened with (or one with the same
	// parameters). It may write (MP4 writes a fragment when one is done).
	add(au *pipeline.AccessUnit) error
	// flush writes what add queued; it is called at the end of each batch
	// the stream delivers, so the file is complete up to there.
	flush() error
	// size returns the bytes written plus those queued.
	size() int64
	// duration returns the media time the file holds so far.
	duration() time.Duration
	// finish completes the file: what is queued, and the header fix-ups.
	finish() error
	// postprocess returns slow work to run on the finished file while it
	// is still open (MP4 faststart), or nil. It runs in a goroutine of its
	// own, so that the recording goes on meanwhile, and must give up
	// (leaving the file as finish left it) when its ctx ends.
	postprocess() func(ctx context.Context) error
	// salvage is called after a write error instead of finish: it may fix
	// up what is already in the file, but must not make it grow.
	salvage()
}

// fileHandle is an open recording file inside its root.
type fileHandle struct {
	root  *os.Root
	rel   string // path below the root
	path  string // path as the template expanded it, for logs and events
	f     *os.File
	n     int64 // bytes written to f (its size, as writes only append)
	bytes *pipeline.Counter
	log   *slog.Logger
	done  bool

	sync       syncPolicy
	fsyncs     *pipeline.Histogram // the latency of every fsync
	slow       time.Duration       // an fsync taking longer is logged (slowFsync)
	lastSync   time.Time           // when the last fsync under the policy began
	dirsSynced bool                // the directories holding the file's name were synced
	slowSaid   bool                // a slow fsync of this file was logged
}

// slowFsync is the fsync latency that is logged (once per file): a disk
// that takes this long holds up the recording goroutine, and its reader
// soon lags the stream.
const slowFsync = time.Second

// writev appends bufs to the file with as few system calls as possible.
// If it fails part way (a full disk), the file is cut back to where it
// was, so that it ends on a whole tag or fragment rather than inside one.
// After a whole write it fsyncs the file when the fsync policy says it is
// due: each call writes whole tags or one whole fragment, so what an fsync
// makes durable is always a valid file.
func (h *fileHandle) writev(bufs [][]byte) error {
	n, err := writeVec(h.f, bufs)
	h.bytes.Add(uint64(n))
	if err != nil && n > 0 && h.f.Truncate(h.n) == nil {
		n = 0
	}
	h.n += n
	if err != nil {
		return err
	}
	return h.syncDue()
}

// syncDue fsyncs the file if the policy asks for it now.
func (h *fileHandle) syncDue() error {
	if !h.sync.on {
		return nil
	}
	now := time.Now()
	if h.sync.every > 0 && !h.lastSync.IsZero() && now.Sub(h.lastSync) < h.sync.every {
		return nil
	}
	h.lastSync = now
	return h.fsync()
}

// fsync makes the file's data durable and, the first time, the names that
// lead to it: a new file's directory entry (and those of the directories
// made for it) survive a power cut only once their directories are synced
// too (fsync(2), "Calling fsync() does not necessarily ensure that the
// entry in the directory containing the file has also reached disk").
func (h *fileHandle) fsync() error {
	return h.timed(func() error {
		if err := h.f.Sync(); err != nil {
			return err
		}
		if !h.dirsSynced {
			if err := syncDirs(h.root, filepath.Dir(h.rel)); err != nil {
				return err
			}
			h.dirsSynced = true
		}
		return nil
	})
}

// timed runs sync, an fsync of this file or of one written for it,
// counts its latency, and logs the first slow one of the file. An error
// is final: after a failed fsync the kernel may have dropped the dirty
// pages, so retrying could report success for data that is gone.
func (h *fileHandle) timed(sync func() error) error {
	start := time.Now()
	err := sync()
	took := time.Since(start)
	h.fsyncs.Observe(took.Seconds())
	if took > h.slow && !h.slowSaid {
		h.slowSaid = true
		h.log.Warn("slow fsync: the disk took over 1s to make the recording durable", "file", h.path, "took", took.Round(time.Millisecond))
	}
	if err != nil {
		return fmt.Errorf("fsync %s: %w", h.path, err)
	}
	return nil
}

// syncDirs fsyncs dir (below rt) and each of its parents up to the root.
func syncDirs(rt *os.Root, dir string) error {
	for {
		if err := syncDir(rt, dir); err != nil {
			return err
		}
		if dir == "." {
			return nil
		}
		dir = filepath.Dir(dir)
	}
}

// syncDir fsyncs one directory below rt. A filesystem that cannot sync a
// directory (EINVAL) has nothing to make durable that way; any other error
// is returned.
func syncDir(rt *os.Root, dir string) error {
	d, err := rt.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	d.Close()
	if err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, errors.ErrUnsupported) {
		return err
	}
	return nil
}

// close syncs and closes the file and its root. sync is skipped after a
// write error, when the data is already incomplete.
func (h *fileHandle) close(sync bool) error {
	if h.done {
		return nil
	}
	h.done = true
	var err error
	if sync {
		err = h.fsync()
	}
	if cerr := h.f.Close(); err == nil {
		err = cerr
	}
	h.root.Close()
	return err
}

// remove deletes the file; it must be called before close, while the root
// is open.
func (h *fileHandle) remove() error {
	if h.done {
		return errors.New("remove after close")
	}
	return h.root.Remove(h.rel)
}

// createFile creates path (below root) exclusively, with its directories.
// If the name is taken, "-1", "-2", ... go before the extension, so that a
// second publish in the same second, or a template without {start} or
// {seq}, never overwrites an earlier recording.
func (r *Recorder) createFile(root, path string, bytes *pipeline.Counter, log *slog.Logger) (*fileHandle, error) {
	rel, err := filepath.Rel(root, path)
	if err != nil || !within(root, path) {
		return nil, fmt.Errorf("%w: %q is not below %q", errOutsideRoot, path, root)
	}
	r.dirs.RLock()
	defer r.dirs.RUnlock()
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, err
	}
	// os.Root confines every later operation to the root, symlinks
	// included, whatever the names turn out to be.
	rt, err := os.OpenRoot(root)
	if err != nil {
		return nil, err
	}
	if dir := filepath.Dir(rel); dir != "." {
		if err := rt.MkdirAll(dir, 0o755); err != nil {
			rt.Close()
			return nil, err
		}
	}
	ext := filepath.Ext(rel)
	stem := strings.TrimSuffix(rel, ext)
	for i := 0; i < 1000; i++ {
		name := rel
		if i > 0 {
			name = stem + "-" + strconv.Itoa(i) + ext
		}
		f, err := rt.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			rt.Close()
			return nil, err
		}
		return &fileHandle{root: rt, rel: name, path: filepath.Join(root, name), f: f, bytes: bytes, log: log,
			sync: r.set.sync, fsyncs: r.fsyncs, slow: slowFsync}, nil
	}
	rt.Close()
	return nil, fmt.Errorf("%s: 1000 files of that name already exist", path)
}

// segment is the file being written.
type segment struct {
	w      segmentWriter
	fh     *fileHandle
	start  time.Time
	base   time.Duration
	tracks [2]*pipeline.Track // indexed by pipeline.Kind
	head   int64              // bytes of the header: media follows

	lastAudio time.Duration // DTS of the newest audio unit written
	hasAudio  bool
}

// session records one stream: it cuts the unit sequence into files.
type session struct {
	r   *Recorder
	s   *pipeline.Stream
	log *slog.Logger
	// spawn runs post-processing in a goroutine that the Recorder's Run
	// waits for, with Run's ctx.
	spawn   func(func(ctx context.Context))
	seq     int
	cur     *segment
	stopped bool
	// paused is set while the disk is full: nothing is recorded until
	// retryAt, when a new file is tried at the next keyframe. It is
	// cleared once a file gets media again.
	paused  bool
	retryAt time.Time

	// The first file waits (up to trackWait of media) until both kinds
	// of track have shown up, holding the units meanwhile, so that an
	// audio track that starts a little after the video is in the file
	// from the start rather than forcing a second file.
	last   [2]*pipeline.Track // the newest track of each kind seen
	t0     time.Duration      // DTS of the first unit the session saw
	began  bool               // t0 is set
	waited bool               // the wait is over
	held   []*pipeline.AccessUnit

	// stale is, after a republish, the previous session's track of the
	// kind that has not yet sent a unit in the new session.
	stale [2]*pipeline.Track

	lastDTS time.Duration // the newest DTS written
	after   time.Duration // a new file must start after this DTS
}

// trackWait is how much media the first file waits for a missing track:
// the publisher's own limit (see pipeline.Publisher.Expect).
const trackWait = time.Second

// maxHeld bounds the units held during the wait.
const maxHeld = 2048

// diskFullRetry is how long a recording paused by a full disk waits before
// it tries a new file: a disk is freed by retention, an operator or
// another program, and a stream that runs for days must be recorded again
// once it is, without being published again. Each try that fails costs a
// file created and removed.
const diskFullRetry = 5 * time.Second

// diskFull reports whether err says the disk (or the user's quota) has no
// room: the one write error that goes away by itself.
func diskFull(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// record is the goroutine that records stream s until it ends, ctx ends,
// or a write fails.
func (r *Recorder) record(ctx context.Context, s *pipeline.Stream, wg *sync.WaitGroup) {
	log := r.log.With("stream", s.Path(), "proto", "record-"+r.format)
	if err := pipeline.ValidPath(s.Path()); err != nil {
		r.errs.Inc()
		log.Warn("recording refused: the stream path cannot name a file", "err", err)
		return
	}
	info := pipeline.ClientInfo{Proto: "record-" + r.format, Remote: r.set.tmpl.root}
	rd := s.Subscribe(info)
	defer func() { rd.Close() }()
	ss := &session{r: r, s: s, log: log, spawn: func(job func(context.Context)) {
		// This goroutine holds a count of wg, so Run is still waiting.
		wg.Add(1)
		go func() {
			defer wg.Done()
			job(ctx)
		}()
	}}
	for !ss.stopped {
		batch, err := rd.Next(ctx)
		if err != nil {
			switch {
			case errors.Is(err, pipeline.ErrReaderTooSlow):
				// The disk could not keep up. Close what was written and
				// start over at the GOP cache: a gap, not a stop.
				log.Warn("recording fell behind the stream; continuing in a new file", "err", err)
				ss.end(ctx, "reader too slow")
				// The new reader starts at the GOP cache, which may be
				// media the closed file already holds.
				ss.after = ss.lastDTS
				rd.Close()
				rd = s.Subscribe(info)
				continue
			case ctx.Err() != nil:
				ss.drain(ctx, rd)
				ss.end(ctx, "shutdown")
			default:
				ss.end(ctx, "stream ended")
			}
			return
		}
		ss.batch(ctx, batch)
	}
}

// batch records the units of one batch. ctx is the recording's: it only
// bounds the retention pass that may follow a finished file.
func (ss *session) batch(ctx context.Context, batch []*pipeline.AccessUnit) {
	for _, au := range batch {
		ss.unit(ctx, au)
	}
	if c := ss.cur; c != nil && !ss.stopped {
		if err := c.w.flush(); err != nil {
			ss.fail(err)
			return
		}
		if ss.paused && c.fh.n > c.head {
			ss.paused = false
			ss.log.Info("recording resumed: the disk has room again", "file", c.fh.path)
		}
	}
}

// end finishes the current file, after writing any units still held for
// the first file's track wait.
func (ss *session) end(ctx context.Context, reason string) {
	if len(ss.held) > 0 && !ss.stopped {
		ss.waited = true
		held := ss.held
		ss.held = nil
		ss.batch(ctx, held)
	}
	ss.finish(ctx, reason)
}

// drain writes the units still in the ring at shutdown, when ctx has
// ended: Next returns what is buffered before it reports the cancelled
// context.
func (ss *session) drain(ctx context.Context, rd *pipeline.Reader) {
	for !ss.stopped {
		batch, err := rd.Next(ctx)
		if err != nil {
			return
		}
		ss.batch(ctx, batch)
	}
}

// startable reports whether a file may begin with au: a video keyframe, or
// any audio unit of a stream without video.
func (ss *session) startable(au *pipeline.AccessUnit) bool {
	if au.Track.Kind() == pipeline.KindVideo {
		return au.Key
	}
	if c := ss.cur; c != nil {
		return c.tracks[pipeline.KindVideo] == nil
	}
	v, _ := ss.s.Tracks()
	return v == nil && ss.last[pipeline.KindVideo] == nil
}

// waiting reports whether the first file should wait for au's missing
// companion track, and holds au if so.
func (ss *session) waiting(au *pipeline.AccessUnit) bool {
	if ss.waited {
		return false
	}
	v, a := ss.s.Tracks()
	haveBoth := (v != nil || ss.last[pipeline.KindVideo] != nil) && (a != nil || ss.last[pipeline.KindAudio] != nil)
	if haveBoth || au.DTS-ss.t0 >= trackWait || len(ss.held) >= maxHeld {
		ss.waited = true
		return false
	}
	ss.held = append(ss.held, au)
	return true
}

func (ss *session) unit(ctx context.Context, au *pipeline.AccessUnit) {
	if ss.stopped {
		return
	}
	k := au.Track.Kind()
	ss.last[k] = au.Track
	if !ss.began {
		ss.t0, ss.began = au.DTS, true
	}
	if ss.paused && ss.cur == nil && time.Now().Before(ss.retryAt) {
		return
	}
	if ss.cur == nil && !ss.waited {
		if len(ss.held) == 0 && !ss.startable(au) {
			return
		}
		if ss.waiting(au) {
			return
		}
		// The wait is over: replay what was held, then au.
		held := append(ss.held, au)
		ss.held = nil
		for _, h := range held {
			ss.unit(ctx, h)
		}
		return
	}
	if c := ss.cur; c != nil {
		switch {
		case c.tracks[k] == au.Track:
			if ss.startable(au) && ss.due(au) {
				ss.finish(ctx, "segment")
			}
		case c.tracks[k] == nil:
			ss.finish(ctx, "track added")
		case !sameParams(c.tracks[k], au.Track):
			ss.finish(ctx, "codec change")
		case c.tracks[k] == ss.stale[k]:
			// The other track of the new publisher session, which began
			// this file with the old one's equal parameters.
			c.tracks[k], ss.stale[k] = au.Track, nil
			if ss.startable(au) && ss.due(au) {
				ss.finish(ctx, "segment")
			}
		default:
			// A source keeps its *Track while the parameters stay the
			// same, so a new one with equal parameters is a new
			// publisher session: the stream was republished within
			// publisher_grace. Each publish gets its own files. The
			// other kind's track still belongs to the old session until
			// its own first unit shows up.
			other := pipeline.KindAudio
			if k == pipeline.KindAudio {
				other = pipeline.KindVideo
			}
			ss.stale[other] = c.tracks[other]
			ss.finish(ctx, "republish")
		}
	}
	if ss.cur == nil {
		if !ss.startable(au) || au.DTS <= ss.after && ss.seq > 0 {
			return
		}
		ss.begin(au)
		if ss.cur == nil {
			return
		}
	}
	c := ss.cur
	if au.DTS < c.base {
		return // interleaving put it after the keyframe the file starts at
	}
	if k == pipeline.KindAudio && c.hasAudio && au.DTS <= c.lastAudio {
		// The publisher clamps a timestamp that steps back to the previous
		// one (an encoder's audio overlapping itself, a looped input). Two
		// audio frames at one instant make players and decoders stumble;
		// the overlapping frame is the one to leave out.
		ss.r.dropped.Inc()
		return
	}
	if err := c.w.add(au); err != nil {
		ss.fail(err)
		return
	}
	if k == pipeline.KindAudio {
		c.lastAudio, c.hasAudio = au.DTS, true
	}
	ss.lastDTS = max(ss.lastDTS, au.DTS)
}

// due reports whether the current file is long or large enough to end.
func (ss *session) due(au *pipeline.AccessUnit) bool {
	c, set := ss.cur, &ss.r.set
	return set.segment > 0 && au.DTS-c.base >= set.segment ||
		set.maxSize > 0 && c.w.size() >= set.maxSize
}

// sameParams reports whether two tracks carry the same codec parameters.
func sameParams(a, b *pipeline.Track) bool {
	return a.Codec == b.Codec && bytes.Equal(a.Config, b.Config) &&
		a.SampleRate == b.SampleRate && a.Channels == b.Channels
}

// begin opens the next file, starting at au.
func (ss *session) begin(au *pipeline.AccessUnit) {
	r := ss.r
	ss.seq++
	start := time.Now()
	path, err := r.set.tmpl.expand(ss.s.Path(), start, ss.seq)
	if err != nil {
		ss.fail(err)
		return
	}
	fh, err := r.createFile(r.set.tmpl.root, path, r.bytes, ss.log)
	if err != nil {
		ss.fail(err)
		return
	}
	var tracks [2]*pipeline.Track
	k := au.Track.Kind()
	tracks[k] = au.Track
	if k == pipeline.KindVideo {
		if tracks[pipeline.KindAudio] = ss.last[pipeline.KindAudio]; tracks[pipeline.KindAudio] == nil {
			_, tracks[pipeline.KindAudio] = ss.s.Tracks()
		}
	}
	w, err := r.open(fh, tracks, ss.s.Metadata(), au.DTS)
	if err != nil {
		ss.cur = &segment{fh: fh, start: start}
		ss.fail(err)
		return
	}
	ss.cur = &segment{w: w, fh: fh, start: start, base: au.DTS, tracks: tracks, head: fh.n}
	r.markActive(fh, true)
	ss.log.Info("recording started", "file", fh.path, "video", trackName(tracks[pipeline.KindVideo]), "audio", trackName(tracks[pipeline.KindAudio]))
	r.emit(Event{Type: EventStarted, Stream: ss.s.Path(), File: fh.path, Start: start})
}

// finish closes the current file cleanly, if there is one.
func (ss *session) finish(ctx context.Context, reason string) {
	c := ss.cur
	if c == nil {
		return
	}
	ss.cur = nil
	r := ss.r
	err := c.w.finish()
	if err == nil {
		if job := c.w.postprocess(); job != nil {
			if reason == "shutdown" {
				ss.log.Info("faststart skipped at shutdown; the file stays a fragmented MP4", "file", c.fh.path)
			} else {
				// The file stays open and active until the job is done;
				// the recording goes on meanwhile.
				ss.spawn(func(ctx context.Context) {
					jerr := job(ctx)
					if jerr != nil {
						ss.log.Warn("faststart rewrite not done; the file stays a fragmented MP4", "file", c.fh.path, "err", jerr)
					}
					r.closed(ctx, ss.log, ss.s.Path(), c, reason, c.fh.close(jerr != nil))
				})
				return
			}
		}
	}
	if err == nil {
		err = c.fh.close(true)
	}
	if err != nil {
		// fail closes the file, or deletes it if no media reached it.
		r.markActive(c.fh, false)
		ss.cur = c
		ss.fail(err)
		return
	}
	r.closed(ctx, ss.log, ss.s.Path(), c, reason, nil)
}

// closed reports a finished file, closed with err, and applies retention
// (unless ctx has ended: a server shutting down leaves that to the next
// start). It is called from the recording goroutine, or from the
// post-processing one, so it touches no session state.
func (r *Recorder) closed(ctx context.Context, log *slog.Logger, stream string, c *segment, reason string, err error) {
	r.markActive(c.fh, false)
	d := c.w.duration()
	if err != nil {
		r.errs.Inc()
		log.Error("recording could not be closed cleanly", "file", c.fh.path, "bytes", c.fh.n, "err", err)
		r.emit(Event{Type: EventFinished, Stream: stream, File: c.fh.path, Start: c.start, Duration: d, Bytes: c.fh.n, Reason: "write error", Err: err})
		return
	}
	r.files.Inc()
	log.Info("recording finished", "file", c.fh.path, "duration", d.Round(time.Millisecond), "bytes", c.fh.n, "reason", reason)
	r.emit(Event{Type: EventFinished, Stream: stream, File: c.fh.path, Start: c.start, Duration: d, Bytes: c.fh.n, Reason: reason})
	r.applyRetention(ctx, log)
}

// fail stops the stream's recording after an error: the current file is
// closed as it is (readable up to its last complete tag or fragment), or
// deleted if no media reached it (a fragmented MP4 without a fragment does
// not even decode). A full disk pauses the recording: a new file is tried
// at the first keyframe diskFullRetry (Recorder.retry) later, quietly until one gets media
// again. Any other error stops it until the stream is published again.
func (ss *session) fail(err error) {
	r := ss.r
	var file string
	var d time.Duration
	var n int64
	var start time.Time
	deleted := false
	if c := ss.cur; c != nil {
		ss.cur = nil
		file, n, start = c.fh.path, c.fh.n, c.start
		if c.w != nil {
			c.w.salvage()
			d = c.w.duration()
		}
		deleted = c.fh.n <= c.head && c.fh.remove() == nil
		_ = c.fh.close(false)
		r.markActive(c.fh, false)
	}
	switch {
	case diskFull(err) && ss.paused:
		ss.log.Debug("recording still paused: the disk is full", "err", err)
	case diskFull(err):
		ss.paused = true
		r.errs.Inc()
		ss.log.Error("recording paused: the disk is full; the stream goes on unrecorded, and a new file is tried every "+r.retry.String(), "file", file, "bytes", n, "deleted", deleted, "err", err)
	default:
		ss.stopped = true
		r.errs.Inc()
		ss.log.Error("recording stopped: cannot write the file; the stream goes on unrecorded", "file", file, "bytes", n, "deleted", deleted, "err", err)
	}
	if diskFull(err) {
		ss.retryAt = time.Now().Add(r.retry)
		// The next file starts after what this one holds.
		ss.after = ss.lastDTS
	}
	if file != "" {
		r.emit(Event{Type: EventFinished, Stream: ss.s.Path(), File: file, Start: start, Duration: d, Bytes: n, Reason: "write error", Err: err})
	}
}

func trackName(t *pipeline.Track) string {
	if t == nil {
		return "none"
	}
	return t.String()
}
