package mpegtsudp_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts"
	tscodecs "github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts/codecs"

	"github.com/sluice-media/sluice/pipeline"
)

// Parameter sets of a 352x288 and a 1280x720 H.264 stream (the pictures
// are never decoded; the tracks are built from these).
var (
	sps352 = []byte{0x67, 0x64, 0x00, 0x0c, 0xac, 0x3b, 0x50, 0xb0, 0x4b, 0x42, 0x00, 0x00, 0x03, 0x00, 0x02, 0x00, 0x00, 0x03, 0x00, 0x3d, 0x08}
	sps720 = []byte{0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9, 0x40, 0x50, 0x05, 0xbb, 0x01, 0x6c, 0x80, 0x00, 0x00, 0x03, 0x00, 0x80, 0x00, 0x00, 0x1e, 0x07, 0x8c, 0x18, 0xcb}
	pps    = []byte{0x68, 0xee, 0x3c, 0x80}
)

const frameTicks = 3000 // 30 fps at 90 kHz

// synth writes a synthetic H.264 + AAC transport stream, one frame at a
// time, remembering which packets belong to which video frame so that tests
// can lose or reorder them. Frame i's slice carries i, so a reader can tell
// which pictures came through.
type synth struct {
	buf    bytes.Buffer
	w      *mpegts.Writer
	v, a   *mpegts.Track
	sps    []byte
	gop    int
	start  int64 // DTS of frame 0, 90 kHz
	frames map[int][][]byte
	order  [][]byte // every packet, in order
}

func newSynth(t *testing.T, start int64, gop int, vpid, apid uint16, sps []byte) *synth {
	t.Helper()
	s := &synth{start: start, gop: gop, sps: sps, frames: map[int][][]byte{}}
	s.v = &mpegts.Track{PID: vpid, Codec: &tscodecs.H264{}}
	s.a = &mpegts.Track{PID: apid, Codec: &tscodecs.MPEG4Audio{Config: mpeg4audio.Config{Type: 2, SampleRate: 48000, ChannelConfig: 2}}}
	s.w = &mpegts.Writer{W: &s.buf, Tracks: []*mpegts.Track{s.v, s.a}}
	if err := s.w.Initialize(); err != nil {
		t.Fatal(err)
	}
	return s
}

// frame writes video frame i (a keyframe every gop frames) and one AAC frame
// at the same time.
func (s *synth) frame(t *testing.T, i int) {
	t.Helper()
	dts := (s.start + int64(i)*frameTicks) & (1<<33 - 1)
	typ := byte(0x41)
	var au [][]byte
	if i%s.gop == 0 {
		typ = 0x65
		au = append(au, s.sps, pps)
	}
	slice := []byte{typ, 0xAA, byte(i >> 8), byte(i)}
	for len(slice) < 900 { // several packets per picture
		slice = append(slice, 0xAB)
	}
	au = append(au, slice)
	if err := s.w.WriteH264(s.v, dts, dts, au); err != nil {
		t.Fatal(err)
	}
	s.cut(i)
	aac := bytes.Repeat([]byte{0x21, 0x1B}, 20)
	if err := s.w.WriteMPEG4Audio(s.a, dts, [][]byte{aac}); err != nil {
		t.Fatal(err)
	}
	s.cut(-1)
}

// cut moves what the writer produced into packets, filed under frame i.
func (s *synth) cut(i int) {
	b := s.buf.Bytes()
	for len(b) >= 188 {
		p := bytes.Clone(b[:188])
		b = b[188:]
		s.order = append(s.order, p)
		if i >= 0 {
			s.frames[i] = append(s.frames[i], p)
		}
	}
	s.buf.Reset()
}

// without returns every packet except drop.
func (s *synth) without(drop []byte) [][]byte {
	var out [][]byte
	for _, p := range s.order {
		if &p[0] != &drop[0] {
			out = append(out, p)
		}
	}
	return out
}

// swapped returns every packet, with a and b exchanged.
func (s *synth) swapped(a, b []byte) [][]byte {
	out := make([][]byte, 0, len(s.order))
	for _, p := range s.order {
		switch &p[0] {
		case &a[0]:
			p = b
		case &b[0]:
			p = a
		}
		out = append(out, p)
	}
	return out
}

// sendPackets sends packets to addr as datagrams of 7 packets (1316 bytes),
// briefly pausing now and then so that the socket buffer never overflows.
func sendPackets(t *testing.T, addr string, pkts [][]byte) {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sendVia(t, c, pkts)
}

func sendVia(t *testing.T, c net.Conn, pkts [][]byte) {
	t.Helper()
	for i := 0; i < len(pkts); i += 7 {
		var d []byte
		for _, p := range pkts[i:min(i+7, len(pkts))] {
			d = append(d, p...)
		}
		if _, err := c.Write(d); err != nil {
			t.Fatal(err)
		}
		// About 5 MB/s: well inside a default 208 KiB socket buffer
		// even when the server is slow to be scheduled.
		if (i/7)%4 == 3 {
			time.Sleep(time.Millisecond)
		}
	}
}

// unit is what a test remembers of an access unit it read.
type unit struct {
	kind  pipeline.Kind
	frame int // video: the frame number in the slice; -1 for audio
	key   bool
	dts   time.Duration
	track *pipeline.Track
}

// frameOf reads the synthetic frame number from an AVCC video unit.
func frameOf(t *testing.T, data []byte) int {
	t.Helper()
	for len(data) >= 4 {
		n := int(binary.BigEndian.Uint32(data))
		nal := data[4 : 4+n]
		if len(nal) >= 4 && nal[1] == 0xAA {
			return int(nal[2])<<8 | int(nal[3])
		}
		data = data[4+n:]
	}
	t.Fatalf("video unit without a synthetic slice: % x", data[:min(len(data), 16)])
	return 0
}

// readUnits reads path from the hub until stop says enough, or fails after
// timeout.
func readUnits(t *testing.T, hub *pipeline.Hub, path string, timeout time.Duration, stop func([]unit) bool) []unit {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	r, err := hub.Play(ctx, path, pipeline.ClientInfo{Proto: "test", Remote: "test"})
	if err != nil {
		t.Fatalf("play %s: %v", path, err)
	}
	defer r.Close()
	var got []unit
	for !stop(got) {
		batch, err := r.Next(ctx)
		if err != nil {
			if errors.Is(err, pipeline.ErrStreamEnded) {
				return got
			}
			t.Fatalf("reading %s after %d units: %v", path, len(got), err)
		}
		for _, au := range batch {
			u := unit{kind: au.Track.Kind(), frame: -1, key: au.Key, dts: au.DTS, track: au.Track}
			if u.kind == pipeline.KindVideo {
				u.frame = frameOf(t, au.Data)
			}
			got = append(got, u)
		}
	}
	return got
}

// sawFrame returns a stop condition: video frame n has been read.
func sawFrame(n int) func([]unit) bool {
	return func(us []unit) bool {
		for _, u := range us {
			if u.frame >= n {
				return true
			}
		}
		return false
	}
}

func videoFrames(us []unit) []int {
	var out []int
	for _, u := range us {
		if u.kind == pipeline.KindVideo {
			out = append(out, u.frame)
		}
	}
	return out
}

// checkMonotonic fails when a track's DTS goes back or jumps by more than
// maxStep between consecutive units.
func checkMonotonic(t *testing.T, us []unit, maxStep time.Duration) {
	t.Helper()
	var last [2]time.Duration
	var has [2]bool
	for i, u := range us {
		if has[u.kind] {
			d := u.dts - last[u.kind]
			if d < 0 || d > maxStep {
				t.Fatalf("unit %d (%v, frame %d): DTS %v after %v", i, u.kind, u.frame, u.dts, last[u.kind])
			}
		}
		last[u.kind], has[u.kind] = u.dts, true
	}
}

func seq(from, to int) []int {
	var out []int
	for i := from; i <= to; i++ {
		out = append(out, i)
	}
	return out
}
