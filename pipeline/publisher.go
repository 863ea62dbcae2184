package pipeline

import (
	"sync/atomic"
	"time"
)

// Publisher is the write side of a stream, held by the one source that
// publishes it. Its methods are called from that source's goroutine only.
type Publisher struct {
	s       *Stream
	info    ClientInfo
	session int

	based    bool          // offset has been chosen
	offset   time.Duration // added to ingest timestamps to reach the stream timeline
	firstDTS time.Duration // first stream-timeline DTS of this session
	waitKey  bool          // drop video until the session's first keyframe
	// alias maps a track of this session to the stream's equal track
	// (Track.Same), so that an unchanged reconnect keeps the old one.
	alias    [numKinds]struct{ from, to *Track }
	expect   [numKinds]bool
	expected bool
	closed   bool
	jumped   bool // a timestamp jump was logged for this session

	lastNotify time.Time
	// flush wakes readers at the end of a merge window whose last units
	// no later write woke them for (a publisher pausing mid-window), so no
	// unit waits longer than the window. One timer per publisher, armed at
	// most once per window.
	flush   *time.Timer
	pending atomic.Bool
	bursts  bool // the source reads in bursts and calls Flush (PaceReads)
	units   [numKinds]*Counter
	fixups  *Counter
	sess    *session // set by the Gate; nil for publishers it did not admit
}

// Stream returns the stream being published.
func (p *Publisher) Stream() *Stream { return p.s }

// Expect declares which tracks the source will publish, when it knows (from
// RTMP metadata or an MPEG-TS PMT). The stream is not offered to players until
// each expected track has delivered its first unit, so that their headers
// (which announce audio and video) are right; a track that never comes is
// given up on after a second of media.
func (p *Publisher) Expect(video, audio bool) {
	p.expect[KindVideo], p.expect[KindAudio] = video, audio
	p.expected = true
}

// SetMetadata records the publisher's stream description, sent to every
// reader before media. It also declares the announced tracks (see Expect)
// unless Expect was called.
func (p *Publisher) SetMetadata(m *Metadata) {
	if !p.expected {
		p.expect[KindVideo], p.expect[KindAudio] = m.HasVideo, m.HasAudio
		p.expected = m.HasVideo || m.HasAudio
	}
	p.s.mu.Lock()
	p.s.meta = m
	p.s.mu.Unlock()
}

// Write publishes one access unit. au.DTS and au.PTS are in the source's own
// time base (any origin); Write moves them onto the stream timeline, which
// starts at 0 and continues across publisher reconnects. Video before the
// session's first keyframe is dropped, because no reader could decode it.
// Write never blocks on readers. It returns ErrStreamEnded once the stream has
// been ended (by shutdown), telling the source to stop.
func (p *Publisher) Write(au *AccessUnit) error {
	s := p.s
	select {
	case <-s.done:
		return ErrStreamEnded
	default:
	}
	kind := au.Track.Kind()
	if kind == KindVideo && p.waitKey {
		if !au.Key {
			return nil
		}
		p.waitKey = false
	}
	if !p.based {
		p.base(au.DTS)
	}
	au.DTS += p.offset
	au.PTS += p.offset

	s.mu.Lock()
	now := time.Now()
	s.meter.tick(now)
	p.splice(au, kind)
	if last := s.trackDTS[kind]; s.hasTrackDTS[kind] && au.DTS < last+minStep {
		// Muxers need a strictly increasing DTS per track, whatever the
		// order of publishers: a source that steps back (jitter, rounding,
		// a looped file, a new publisher whose tracks start unevenly) is
		// clamped to one step past the track's last unit, and counted.
		d := last + minStep - au.DTS
		au.DTS += d
		au.PTS += d
		p.fixupCounter().Inc()
	}
	s.trackDTS[kind], s.hasTrackDTS[kind] = au.DTS, true
	if cur := s.tracks[kind]; cur != au.Track {
		if a := &p.alias[kind]; a.from == au.Track && a.to == cur {
			au.Track = cur
		} else if cur.Same(au.Track) {
			a.from, a.to = au.Track, cur
			au.Track = cur
		}
	}
	s.tracks[kind] = au.Track
	gopStart := au.Key && (kind == KindVideo || s.tracks[KindVideo] == nil && !p.expect[KindVideo])
	s.ring.push(au)
	if gopStart {
		s.keys = append(s.keys, au.seq)
		if keep := max(s.opts.GOPCache, 1) + 1; len(s.keys) > keep {
			s.keys = append(s.keys[:0], s.keys[len(s.keys)-keep:]...)
		}
		s.lastKey.Store(au.seq + 1)
	}
	s.retain(au)
	s.meter.count(kind, len(au.Data), au.DTS)
	s.lastDTS, s.lastWall, s.hasDTS = au.DTS, now, true
	ready := !s.isReady() && p.playable(au)
	s.mu.Unlock()

	p.unitCounter(kind).Inc()
	if ready {
		s.readyOnce.Do(func() {
			v, a := s.Tracks()
			s.log.Info("stream ready", "video", trackName(v), "audio", trackName(a), "pipeline", s.opts.Pipeline)
			s.hub.announce(s)
		})
	}
	if w := s.opts.MergeWindow; w <= 0 {
		s.wakeAll()
	} else if p.bursts {
		p.pending.Store(true)
	} else if now.Sub(p.lastNotify) >= w {
		p.lastNotify = now
		s.wakeAll()
	} else if !p.pending.Swap(true) {
		delay := w - now.Sub(p.lastNotify)
		if p.flush == nil {
			p.flush = time.AfterFunc(delay, p.flushWindow)
		} else {
			p.flush.Reset(delay)
		}
	}
	return nil
}

// flushWindow runs on the flush timer's goroutine.
func (p *Publisher) flushWindow() {
	p.pending.Store(false)
	p.s.wakeAll()
}

// playable reports whether the stream can be offered to players after au.
// Called with the stream lock held.
func (p *Publisher) playable(au *AccessUnit) bool {
	s := p.s
	if s.keysEmpty() && s.tracks[KindVideo] != nil {
		return false // a reader would have no keyframe to start from
	}
	if !p.expected {
		return true
	}
	for k := range numKinds {
		if p.expect[k] && s.tracks[k] == nil {
			return au.DTS-p.firstDTS >= time.Second
		}
	}
	return true
}

func (s *Stream) keysEmpty() bool { return len(s.keys) == 0 }

// minStep is the smallest DTS step within a track: the millisecond, the
// coarsest clock a protocol carries (RTMP, FLV).
const minStep = time.Millisecond

// base chooses the session's timeline offset so that its first unit lands at
// 0 for a new stream, or, after a reconnect or a discontinuity, just after
// the latest unit of any track plus the time the stream was silent.
func (p *Publisher) base(dts time.Duration) {
	s := p.s
	s.mu.Lock()
	start := time.Duration(0)
	if s.hasDTS {
		start = s.lastDTS + max(time.Since(s.lastWall), minStep)
		for k := range numKinds {
			if s.hasTrackDTS[k] {
				start = max(start, s.trackDTS[k]+minStep)
			}
		}
	}
	s.mu.Unlock()
	p.offset = start - dts
	p.firstDTS = start
	p.based = true
}

// Discontinuity tells the stream that the source's timestamps start over
// from here: the same stream continues from another origin (a relay that
// switched upstreams, an encoder that restarted without reconnecting). The
// next unit is placed just after the stream's latest one, as after a
// reconnect, and video resumes at the next keyframe, so that readers see a
// pause at most and timestamps never go back.
func (p *Publisher) Discontinuity() {
	p.based = false
	p.waitKey = true
}

// Close ends the session. Readers are held for the pipeline's
// publisher_grace (or ended at once if it is 0). Close is idempotent.
func (p *Publisher) Close() { p.Finish("") }

// Finish is Close, recording why the session ended (a cause such as
// "client_closed", "timeout", "protocol_error") in
// sluice_sessions_closed_total, and then telling the authorizer the
// publisher left. Only the first Finish or Close counts.
func (p *Publisher) Finish(cause string) {
	p.release()
	p.sess.finish(cause)
}

// End is Finish, ending the stream at once instead of holding its readers
// for publisher_grace: a relay released because nobody reads the stream
// any more has nobody to hold it for, and a player arriving meanwhile must
// start a new pull rather than get a stale picture.
func (p *Publisher) End(cause string) {
	p.release()
	p.s.end(cause)
	p.sess.finish(cause)
}

// CountBytes adds n received bytes to the session's and the protocol's
// counts.
func (p *Publisher) CountBytes(n int64) { p.sess.add(n) }

func (p *Publisher) release() {
	if p.closed {
		return
	}
	p.closed = true
	if p.flush != nil {
		p.flush.Stop()
	}
	p.s.detachPublisher(p)
	// Readers waiting in a merge window must see the last units now.
	p.s.wakeAll()
}

func (p *Publisher) unitCounter(k Kind) *Counter {
	if p.units[k] == nil {
		p.units[k] = p.s.hub.m.units.With(p.s.opts.Pipeline, k.String())
	}
	return p.units[k]
}

// Timestamp jumps: a source whose timestamps leap forward, or step back
// further than jitter does, has restarted its clock (an encoder restarted
// without reconnecting, a looped file) or is broken. Either way the stream
// goes on from its latest unit, as the MPEG-TS ingest's timeline does
// (ingest/mpegts/timeline.go), so that players and muxers see a steady
// timeline instead of a leap of hours (an HLS segment as long) or of a
// stretch of units clamped one millisecond apart.
const (
	// maxJump is how far ahead of the stream's newest unit a unit may
	// land; the tracks of one source interleave far closer than this.
	maxJump = 5 * time.Second
	// maxStepBack is how far behind its track's last unit a unit may
	// land before it is a new timeline rather than jitter (which is
	// clamped).
	maxStepBack = time.Second
	// jumpGap is where the new timeline starts after the newest unit:
	// about a frame.
	jumpGap = time.Second / 30
)

// splice moves the session onto a new timeline when au's DTS jumps (see
// maxJump), counting it in sluice_timestamp_jumps_total and logging the
// first of the session. Called with the stream lock held.
func (p *Publisher) splice(au *AccessUnit, kind Kind) {
	s := p.s
	if !s.hasDTS {
		return
	}
	newest := s.lastDTS
	for k := range numKinds {
		if s.hasTrackDTS[k] {
			newest = max(newest, s.trackDTS[k])
		}
	}
	back := s.hasTrackDTS[kind] && au.DTS < s.trackDTS[kind]-maxStepBack
	if !back && au.DTS <= newest+maxJump {
		return
	}
	d := newest + jumpGap - au.DTS
	p.offset += d
	au.DTS += d
	au.PTS += d
	s.hub.m.jumps.With(s.opts.Pipeline).Inc()
	if !p.jumped {
		p.jumped = true
		s.log.Warn("publisher timestamps jumped; the stream goes on from its latest unit (logged once a session; see sluice_timestamp_jumps_total)",
			"proto", p.info.Proto, "remote", p.info.Remote, "jump", -d)
	}
}

func (p *Publisher) fixupCounter() *Counter {
	if p.fixups == nil {
		p.fixups = p.s.hub.m.fixups.With(p.s.opts.Pipeline)
	}
	return p.fixups
}

func trackName(t *Track) string {
	if t == nil {
		return "none"
	}
	return t.String()
}
