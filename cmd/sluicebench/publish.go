package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"time"

	"github.com/bluenviron/gortmplib"
	"github.com/bluenviron/gortmplib/pkg/codecs"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"

	"github.com/sluice-media/sluice/pipeline/codec"
	"github.com/sluice-media/sluice/pipeline/media/flv"
)

// mediaFile is an H.264 + AAC FLV file held in memory, ready to be sent in
// a loop.
type mediaFile struct {
	sps, pps []byte
	asc      *mpeg4audio.AudioSpecificConfig
	frames   []fileFrame
	// span is how far the timeline moves per loop: the last video frame's
	// timestamp plus one frame interval, so loops join seamlessly.
	span time.Duration
	// frameInterval is the median distance between video frames.
	frameInterval time.Duration
	// keyInterval is the median distance between keyframes (the GOP), or
	// span with fewer than two.
	keyInterval time.Duration
}

// fileFrame is one coded frame of the file, timestamps rebased to 0.
type fileFrame struct {
	video bool
	dts   time.Duration
	cts   time.Duration
	nalus [][]byte // video
	data  []byte   // audio
	size  uint32   // video: the RTMP message body length it is sent as
}

// loadFLV reads an FLV file with H.264 video and optional AAC audio.
func loadFLV(path string) (*mediaFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := flv.NewReader(bufio.NewReader(f), 16<<20)
	if _, err := r.ReadFileHeader(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	m := &mediaFile{}
	first := time.Duration(-1)
	var videoDTS []time.Duration
	for {
		tag, err := r.ReadTag()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		ts := time.Duration(tag.Timestamp) * time.Millisecond
		switch tag.Type {
		case flv.TagVideo:
			v, err := flv.ParseVideo(tag.Data)
			if err != nil {
				return nil, fmt.Errorf("%s: video tag at %v: %w", path, ts, err)
			}
			if v.Codec != flv.CodecAVC || v.FourCC != 0 {
				return nil, fmt.Errorf("%s: only H.264 video is supported", path)
			}
			switch v.PacketType {
			case flv.PacketSequenceStart:
				if m.sps != nil {
					continue
				}
				t, err := codec.H264(v.Payload)
				if err != nil {
					return nil, fmt.Errorf("%s: %w", path, err)
				}
				m.sps, m.pps = t.SPS, t.PPS
			case flv.PacketCodedFrames:
				nalus, err := codec.SplitAVCC(nil, v.Payload)
				if err != nil {
					return nil, fmt.Errorf("%s: video frame at %v: %w", path, ts, err)
				}
				if first < 0 {
					first = ts
				}
				videoDTS = append(videoDTS, ts)
				m.frames = append(m.frames, fileFrame{
					video: true, dts: ts, cts: time.Duration(v.CTS) * time.Millisecond,
					nalus: nalus, size: uint32(5 + len(v.Payload)),
				})
			}
		case flv.TagAudio:
			a, err := flv.ParseAudio(tag.Data)
			if err != nil {
				return nil, fmt.Errorf("%s: audio tag at %v: %w", path, ts, err)
			}
			if a.Format != flv.SoundAAC {
				return nil, fmt.Errorf("%s: only AAC audio is supported", path)
			}
			switch a.PacketType {
			case flv.PacketSequenceStart:
				if m.asc != nil {
					continue
				}
				var asc mpeg4audio.AudioSpecificConfig
				if err := asc.Unmarshal(a.Payload); err != nil {
					return nil, fmt.Errorf("%s: AAC config: %w", path, err)
				}
				m.asc = &asc
			case flv.PacketCodedFrames:
				if first < 0 {
					first = ts
				}
				m.frames = append(m.frames, fileFrame{dts: ts, data: a.Payload})
			}
		}
	}
	if m.sps == nil || len(videoDTS) < 2 {
		return nil, fmt.Errorf("%s: no H.264 sequence header or fewer than 2 video frames", path)
	}
	m.frameInterval = medianStep(videoDTS)
	var keyDTS []time.Duration
	for _, fr := range m.frames {
		if fr.video && isIDR(fr.nalus) {
			keyDTS = append(keyDTS, fr.dts)
		}
	}
	// The loop is as long as the video; audio past its end (encoders often
	// leave some) is dropped so the next loop's timeline does not overlap
	// it and video stays continuous across the seam.
	m.span = videoDTS[len(videoDTS)-1] - first + m.frameInterval
	frames := m.frames[:0]
	for _, fr := range m.frames {
		fr.dts -= first
		if fr.dts < m.span {
			frames = append(frames, fr)
		}
	}
	m.frames = frames
	m.keyInterval = m.span
	if len(keyDTS) >= 2 {
		m.keyInterval = medianStep(keyDTS)
	}
	return m, nil
}

func medianStep(ts []time.Duration) time.Duration {
	steps := make([]time.Duration, 0, len(ts)-1)
	for i := 1; i < len(ts); i++ {
		steps = append(steps, ts[i]-ts[i-1])
	}
	q := summarize(steps)
	return time.Duration(q.P50 * float64(time.Millisecond))
}

// publisher sends a mediaFile to an RTMP server in real time, looping it
// with a continuous timeline, and logs when each video frame went out.
type publisher struct {
	url   *url.URL
	file  *mediaFile
	clock *clock
	sent  *sentLog
}

// run connects, announces the tracks and sends until ctx ends. ready is
// closed once the server accepted the publish.
func (p *publisher) run(ctx context.Context, ready chan<- struct{}) error {
	t, err := parseRTMPURL(p.url)
	if err != nil {
		return err
	}
	// The library takes the application from the path and the stream name
	// from the fragment; split them as encoders do, so servers that route
	// by application (nginx-rtmp) find it.
	lu := *p.url
	lu.Path, lu.RawPath, lu.RawQuery, lu.Fragment = "/"+t.app, "", "", t.stream
	c := &gortmplib.Client{URL: &lu, Publish: true}
	ictx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err = c.Initialize(ictx)
	cancel()
	if err != nil {
		return fmt.Errorf("publish %s: %w", p.url.Redacted(), err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, c.Close)
	defer stop()

	video := &gortmplib.Track{Codec: &codecs.H264{SPS: p.file.sps, PPS: p.file.pps}}
	tracks := []*gortmplib.Track{video}
	var audio *gortmplib.Track
	if p.file.asc != nil {
		audio = &gortmplib.Track{Codec: &codecs.MPEG4Audio{Config: p.file.asc}}
		tracks = append(tracks, audio)
	}
	w := &gortmplib.Writer{Conn: c, Tracks: tracks}
	if err := w.Initialize(); err != nil {
		return fmt.Errorf("publish %s: %w", p.url.Redacted(), err)
	}
	// The server says little to a publisher (acknowledgements); it is read
	// and dropped so its socket buffer never fills.
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		_, _ = io.Copy(io.Discard, c.NetConn())
	}()
	defer func() { c.Close(); <-drained }()
	close(ready)

	start := p.clock.now()
	for loop := time.Duration(0); ; loop += p.file.span {
		for i := range p.file.frames {
			fr := &p.file.frames[i]
			dts := loop + fr.dts
			if wait := start + dts - p.clock.now(); wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-ctx.Done():
					t.Stop()
					return nil
				case <-t.C:
				}
			}
			if fr.video {
				p.sent.add(sentFrame{ts: uint32(dts / time.Millisecond), pts: uint32((dts + fr.cts) / time.Millisecond),
					size: fr.size, key: isIDR(fr.nalus), at: p.clock.now()})
				err = w.WriteH264(video, dts+fr.cts, dts, fr.nalus)
			} else if audio != nil {
				err = w.WriteMPEG4Audio(audio, dts, fr.data)
			}
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("publish %s: %w", p.url.Redacted(), err)
			}
		}
	}
}

// isIDR reports whether an H.264 access unit holds an IDR picture (NAL unit
// type 5, ITU-T H.264 Table 7-1): what the RTMP writer marks as a keyframe.
func isIDR(nalus [][]byte) bool {
	for _, n := range nalus {
		if len(n) > 0 && n[0]&0x1f == 5 {
			return true
		}
	}
	return false
}
