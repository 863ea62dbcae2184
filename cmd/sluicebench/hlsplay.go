package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/bluenviron/gohlslib/v2/pkg/playlist"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"
)

// newHLSClient returns the client HLS players share. Unlike HTTP-FLV's it
// keeps connections alive, as browsers do: a player's requests follow each
// other, so each rendition it follows holds about one connection. conns
// bounds the idle ones kept.
func newHLSClient(conns int) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext:           (&net.Dialer{Timeout: setupTimeout}).DialContext,
		DisableCompression:    true,
		MaxIdleConns:          conns,
		MaxIdleConnsPerHost:   conns,
		ResponseHeaderTimeout: setupTimeout,
		ReadBufferSize:        32 << 10,
	}}
}

// hlsPlayer is the HLS play client. From index.m3u8 it takes the first
// variant and its default audio rendition and follows each media playlist
// as a low-latency player (hls.js, AVPlayer) does: blocking playlist
// reloads and every part fetched as the preload hints name it. Only fMP4
// playlists (Sluice's lowLatency and fmp4 variants) are followed: their
// movie fragment headers give the timestamps and keyframes the player's
// accounting needs without decoding anything.
type hlsPlayer struct {
	p      *player
	client *http.Client
	url    string
}

// run plays until ctx ends or a request fails.
func (h *hlsPlayer) run(ctx context.Context) error {
	u, err := url.Parse(h.url)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	body, err := h.get(ctx, u, &buf)
	if err != nil {
		return err
	}
	pl, err := playlist.Unmarshal(body)
	if err != nil {
		return fmt.Errorf("%s: %w", path.Base(u.Path), err)
	}
	video, audio := u, (*url.URL)(nil)
	if mv, ok := pl.(*playlist.Multivariant); ok {
		if len(mv.Variants) == 0 {
			return fmt.Errorf("%s lists no variant", path.Base(u.Path))
		}
		v := mv.Variants[0]
		if video, err = u.Parse(v.URI); err != nil {
			return err
		}
		for _, r := range mv.Renditions {
			if r.Type == playlist.MultivariantRenditionTypeAudio && r.GroupID == v.Audio && r.Default && r.URI != nil {
				if audio, err = u.Parse(*r.URI); err != nil {
					return err
				}
			}
		}
	}
	if audio == nil {
		return h.follow(ctx, video, true)
	}
	// The audio rendition is followed beside the video one, as players
	// do; a failure of either ends both.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	audioErr := make(chan error, 1)
	go func() {
		err := h.follow(ctx, audio, false)
		if err != nil {
			cancel()
		}
		audioErr <- err
	}()
	err = h.follow(ctx, video, true)
	cancel()
	aerr := <-audioErr
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return aerr
}

// get fetches u into buf and returns its bytes (valid until the next get
// into buf), counting them as received.
func (h *hlsPlayer) get(ctx context.Context, u *url.URL, buf *bytes.Buffer) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return nil, fmt.Errorf("HTTP %s for a %s", resp.Status, path.Ext(u.Path))
	}
	buf.Reset()
	_, err = buf.ReadFrom(resp.Body)
	h.p.bytes.Add(uint64(buf.Len()))
	if err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// hlsEntry is a part, or a segment listed without parts, of a media
// playlist, in playback order.
type hlsEntry struct {
	uri         string
	independent bool // a player may start here (a keyframe comes first)
}

// entries lists what of pl a player can fetch, in order: the parts of
// segments that list them, else the segments, then the parts of the segment
// in progress. Gap segments are left out.
func entries(pl *playlist.Media) []hlsEntry {
	var es []hlsEntry
	for _, s := range pl.Segments {
		switch {
		case s.Gap:
		case len(s.Parts) > 0:
			for _, p := range s.Parts {
				es = append(es, hlsEntry{uri: p.URI, independent: p.Independent})
			}
		default:
			es = append(es, hlsEntry{uri: s.URI, independent: true})
		}
	}
	for _, p := range pl.Parts {
		es = append(es, hlsEntry{uri: p.URI, independent: p.Independent})
	}
	return es
}

// joinAt returns the index of the newest entry a player can start at.
func joinAt(es []hlsEntry) int {
	for i := len(es) - 1; i >= 0; i-- {
		if es[i].independent {
			return i
		}
	}
	return 0
}

// sameMedia compares two media URIs without their queries: a signed URI's
// signature changes with its window, the file does not.
func sameMedia(a, b string) bool {
	a, _, _ = strings.Cut(a, "?")
	b, _, _ = strings.Cut(b, "?")
	return a == b
}

// blockingReload returns u asking for the playlist that holds part part of
// segment msn (RFC 8216bis §6.2.5.2, _HLS_msn and _HLS_part), the
// player's own query kept.
func blockingReload(u *url.URL, msn, part int) *url.URL {
	r := *u
	q := r.Query()
	q.Set("_HLS_msn", strconv.Itoa(msn))
	q.Set("_HLS_part", strconv.Itoa(part))
	r.RawQuery = q.Encode()
	return &r
}

// rendition is one media playlist a player follows.
type rendition struct {
	h     *hlsPlayer
	u     *url.URL
	video bool
	track int    // the fMP4 track id followed
	scale uint64 // its timescale
	buf   bytes.Buffer
}

// follow plays the media playlist at u until ctx ends or a request fails:
// it fetches the init section, starts at the newest independent part, and
// then, while the playlist offers blocking reloads and preload hints,
// fetches the hinted part (which the server answers once it exists) and
// reloads the playlist blocking on that part (RFC 8216bis §6.2.5.2,
// §6.3.7). Parts listed that it did not fetch (it fell behind) are fetched
// in order; a player that fell out of the playlist rejoins at the newest
// independent part, and the timestamps jump (a gap). A playlist without
// hints is reloaded every half target duration (§6.3.4).
func (h *hlsPlayer) follow(ctx context.Context, u *url.URL, video bool) error {
	r := &rendition{h: h, u: u, video: video}
	pl, err := r.playlist(ctx, u)
	if err != nil {
		return err
	}
	if pl.Map == nil {
		return fmt.Errorf("%s has no EXT-X-MAP: only fMP4 playlists are followed", path.Base(u.Path))
	}
	if err := r.init(ctx, pl.Map.URI); err != nil {
		return err
	}
	if video {
		// The init section carries the decoder configuration, as a
		// sequence header does.
		h.p.onVideo(videoConfig, 0, 0)
		h.p.playing.Store(true)
	}
	last := ""
	catchUp := func(es []hlsEntry, from int) error {
		for _, e := range es[from:] {
			if err := r.media(ctx, e.uri); err != nil {
				return err
			}
			last = e.uri
		}
		return nil
	}
	es := entries(pl)
	if err := catchUp(es, joinAt(es)); err != nil {
		return err
	}
	for {
		if pl.Endlist {
			return errors.New("the playlist ended")
		}
		if pl.PreloadHint != nil && pl.ServerControl != nil && pl.ServerControl.CanBlockReload {
			// The hint names the part after the last one listed: part
			// len(Parts) of the segment after the last complete one.
			msn, part := pl.MediaSequence+len(pl.Segments), len(pl.Parts)
			hint := pl.PreloadHint.URI
			if err := r.media(ctx, hint); err != nil {
				return err
			}
			last = hint
			pl, err = r.playlist(ctx, blockingReload(u, msn, part))
		} else {
			if err := sleep(ctx, max(time.Duration(pl.TargetDuration)*time.Second/2, 100*time.Millisecond)); err != nil {
				return err
			}
			pl, err = r.playlist(ctx, u)
		}
		if err != nil {
			return err
		}
		es = entries(pl)
		next := joinAt(es)
		for i := len(es) - 1; i >= 0; i-- {
			if sameMedia(es[i].uri, last) {
				next = i + 1
				break
			}
		}
		if err := catchUp(es, next); err != nil {
			return err
		}
	}
}

// playlist fetches and parses the media playlist at u.
func (r *rendition) playlist(ctx context.Context, u *url.URL) (*playlist.Media, error) {
	b, err := r.h.get(ctx, u, &r.buf)
	if err != nil {
		return nil, err
	}
	var pl playlist.Media
	if err := pl.Unmarshal(b); err != nil {
		return nil, fmt.Errorf("%s: %w", path.Base(u.Path), err)
	}
	return &pl, nil
}

// init fetches the init section and picks the track to follow: the first
// video track of a video rendition, else the first track.
func (r *rendition) init(ctx context.Context, uri string) error {
	u, err := r.u.Parse(uri)
	if err != nil {
		return err
	}
	b, err := r.h.get(ctx, u, &r.buf)
	if err != nil {
		return err
	}
	var in fmp4.Init
	if err := in.Unmarshal(bytes.NewReader(b)); err != nil {
		return fmt.Errorf("init section: %w", err)
	}
	for _, t := range in.Tracks {
		if r.video && (t.Codec == nil || !t.Codec.IsVideo()) {
			continue
		}
		if t.TimeScale == 0 {
			break
		}
		r.track, r.scale = t.ID, uint64(t.TimeScale)
		return nil
	}
	return errors.New("the init section has no track to follow")
}

// media fetches a part or segment and accounts for its samples: each video
// sample as a frame received now, audio samples as a count.
func (r *rendition) media(ctx context.Context, uri string) error {
	u, err := r.u.Parse(uri)
	if err != nil {
		return err
	}
	b, err := r.h.get(ctx, u, &r.buf)
	if err != nil {
		return err
	}
	p := r.h.p
	msOf := func(t uint64) uint32 { return uint32(t * 1000 / r.scale) }
	return readFragments(b, func(s fragSample) {
		if s.track != uint32(r.track) {
			return
		}
		if !r.video {
			p.audio.Add(1)
			return
		}
		kind := videoFrame
		if s.key {
			kind = videoKeyFrame
		}
		p.onVideoPTS(kind, msOf(s.dts), msOf(uint64(int64(s.dts)+int64(s.cts))))
	})
}
