package flvhttp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/codec"
	"github.com/sluice-media/sluice/pipeline/media/flv"
	"github.com/sluice-media/sluice/pipeline/media/flvdemux"
	"github.com/sluice-media/sluice/pipeline/wire"
)

// recorder is a publisher that keeps what it is given.
type recorder struct {
	units []*pipeline.AccessUnit
	meta  []*pipeline.Metadata
	video bool
	audio bool
}

func (r *recorder) Write(au *pipeline.AccessUnit) error { r.units = append(r.units, au); return nil }
func (r *recorder) SetMetadata(m *pipeline.Metadata)    { r.meta = append(r.meta, m) }
func (r *recorder) Expect(video, audio bool)            { r.video, r.audio = video, audio }

// demux runs an FLV byte stream through the ingest path.
func demux(b []byte, maxTag int) (*recorder, error) {
	rec := &recorder{}
	d := flvdemux.Demuxer{Sink: rec}
	err := copyFLV(flv.NewReader(bytes.NewReader(b), maxTag), rec, &d)
	return rec, err
}

// remux writes units back as FLV the way the HTTP-FLV output does: a
// sequence header whenever a unit's track changes, then the unit's tag.
func remux(units []*pipeline.AccessUnit) []byte {
	out := flv.AppendFileHeader(nil, true, true)
	var sent [2]*pipeline.Track
	for _, au := range units {
		k := au.Track.Kind()
		if sent[k] != au.Track {
			if w := wire.FLVConfigTag(au.Track); w != nil {
				out = append(out, bytes.Join(w.Bufs, nil)...)
			}
			sent[k] = au.Track
		}
		out = append(out, bytes.Join(au.Wire(pipeline.WireFLV, wire.FLVTag).Bufs, nil)...)
	}
	return out
}

func sameUnits(a, b []*pipeline.AccessUnit) error {
	if len(a) != len(b) {
		return fmt.Errorf("%d units, then %d", len(a), len(b))
	}
	for i := range a {
		x, y := a[i], b[i]
		if x.Track.Codec != y.Track.Codec || !bytes.Equal(x.Track.Config, y.Track.Config) ||
			x.DTS != y.DTS || x.PTS != y.PTS || x.Key != y.Key || !bytes.Equal(x.Data, y.Data) {
			return fmt.Errorf("unit %d: %v %v/%v key %v %d bytes, then %v %v/%v key %v %d bytes", i,
				x.Track.Codec, x.DTS, x.PTS, x.Key, len(x.Data), y.Track.Codec, y.DTS, y.PTS, y.Key, len(y.Data))
		}
	}
	return nil
}

// checkDemux is the invariant the fuzz target and the table share: whatever
// the input, units are well formed, and the units of a stream re-encoded by
// the output path demux to the same units.
func checkDemux(t *testing.T, b []byte) *recorder {
	t.Helper()
	rec, err := demux(b, 1<<20)
	if err != nil {
		var pe *flv.ParseError
		if !errors.As(err, &pe) {
			t.Fatalf("error %v (%T) is not a *flv.ParseError", err, err)
		}
		if pe.Offset < 0 || pe.Offset > int64(len(b)) {
			t.Fatalf("error offset %d outside the %d-byte input", pe.Offset, len(b))
		}
	}
	for i, au := range rec.units {
		if au.Track == nil || len(au.Data) == 0 || len(au.Data) > len(b) {
			t.Fatalf("unit %d is malformed: track %v, %d bytes", i, au.Track, len(au.Data))
		}
		if au.DTS < 0 || au.DTS > time.Duration(1<<32)*time.Millisecond {
			t.Fatalf("unit %d: DTS %v outside the FLV clock", i, au.DTS)
		}
	}
	again, err := demux(remux(rec.units), 1<<24)
	if err != nil {
		t.Fatalf("re-encoded units do not demux: %v", err)
	}
	if err := sameUnits(rec.units, again.units); err != nil {
		t.Fatalf("re-encoded units differ: %v", err)
	}
	return rec
}

// tagBytes is one FLV tag with its PreviousTagSize.
func tagBytes(typ uint8, ts uint32, body ...[]byte) []byte {
	data := bytes.Join(body, nil)
	b := make([]byte, flv.TagHeaderSize, flv.TagHeaderSize+len(data)+4)
	flv.PutTagHeader(b, typ, len(data), ts)
	b = append(b, data...)
	return binary.BigEndian.AppendUint32(b, uint32(flv.TagHeaderSize+len(data)))
}

func avcc(nalus ...[]byte) []byte {
	var b []byte
	for _, n := range nalus {
		b = binary.BigEndian.AppendUint32(b, uint32(len(n)))
		b = append(b, n...)
	}
	return b
}

// hvcC builds an HEVC configuration record (ISO/IEC 14496-15 §8.3.3.1)
// around the given parameter sets.
func hvcC(vps, sps, pps []byte) []byte {
	b := []byte{1, 0x01, 0x60, 0, 0, 0, 0x90, 0, 0, 0, 0, 0, 93, 0xF0, 0, 0xFC, 0xFD, 0xF8, 0xF8, 0, 0, 0x0F, 3}
	for _, n := range []struct {
		typ  byte
		nalu []byte
	}{{32, vps}, {33, sps}, {34, pps}} {
		b = append(b, 0x80|n.typ, 0, 1)
		b = binary.BigEndian.AppendUint16(b, uint16(len(n.nalu)))
		b = append(b, n.nalu...)
	}
	return b
}

// opusHead is an RFC 7845 §5.1 identification header for stereo 48 kHz.
var opusHead = []byte{'O', 'p', 'u', 's', 'H', 'e', 'a', 'd', 1, 2, 0x38, 0x01, 0x80, 0xBB, 0, 0, 0, 0, 0}

// mp3Frame is an MPEG-1 layer III frame header (128 kbit/s, 44.1 kHz,
// stereo) and a silent body.
var mp3Frame = append([]byte{0xFF, 0xFB, 0x90, 0x64}, make([]byte, 413)...)

func enhancedVideo(fourCC uint32, key bool, pt uint8, cts int32, payload []byte) []byte {
	return append(flv.AppendExVideoHeader(nil, fourCC, key, pt, cts), payload...)
}

func enhancedAudio(fourCC uint32, pt uint8, payload []byte) []byte {
	return append(flv.AppendExAudioHeader(nil, fourCC, pt), payload...)
}

// demuxCases are hand-made streams in every codec the ingest carries; they
// seed the fuzz target too.
func demuxCases(t testing.TB) []struct {
	name   string
	flv    []byte
	codecs string // video+audio of the last units
	units  int
	keys   int
} {
	av, err := os.ReadFile("testdata/av.flv")
	if err != nil {
		t.Fatal(err)
	}
	hevcIDR := []byte{19 << 1, 1, 0xAF, 0x10}  // IDR_W_RADL slice
	hevcTrail := []byte{1 << 1, 1, 0xD0, 0x20} // TRAIL_R slice
	vps := []byte{32 << 1, 1, 0x0C, 0x01, 0xFF, 0xFF}
	sps := []byte{33 << 1, 1, 0x01, 0x01, 0x60}
	pps := []byte{34 << 1, 1, 0xC1, 0x72}
	av1C := []byte{0x81, 0x00, 0x0C, 0x00}
	// A temporal delimiter OBU and a key frame header OBU.
	av1Key := []byte{0x12, 0x00, 0x32, 0x01, 0x10}
	vpcC := []byte{1, 0, 0, 0, 0, 10, 0x10, 0x82, 0, 0, 0, 0}
	vp9Key := []byte{0x82, 0x49, 0x83, 0x42, 0x00, 0x77, 0xf0, 0x32, 0x34, 0x30, 0x38, 0x24, 0x1c, 0x19, 0x40, 0x18, 0x03, 0x40, 0x5f, 0xb4}
	hdr := flv.AppendFileHeader(nil, true, true)
	return []struct {
		name   string
		flv    []byte
		codecs string
		units  int
		keys   int
	}{
		// ffprobe -count_packets testdata/av.flv: 17 pictures (one
		// keyframe) and 25 AAC frames.
		{"ffmpeg H.264 + AAC", av, "H264+AAC", 17 + 25, 1 + 25},
		{"enhanced HEVC + Opus", bytes.Join([][]byte{hdr,
			tagBytes(flv.TagVideo, 0, enhancedVideo(flv.FourCCHEVC, true, flv.PacketSequenceStart, 0, hvcC(vps, sps, pps))),
			tagBytes(flv.TagAudio, 0, enhancedAudio(flv.FourCCOpus, flv.PacketSequenceStart, opusHead)),
			tagBytes(flv.TagVideo, 0, enhancedVideo(flv.FourCCHEVC, true, flv.PacketCodedFrames, 40, avcc(hevcIDR))),
			tagBytes(flv.TagAudio, 0, enhancedAudio(flv.FourCCOpus, flv.PacketCodedFrames, []byte{0xFC, 1, 2})),
			tagBytes(flv.TagVideo, 33, enhancedVideo(flv.FourCCHEVC, false, flv.PacketCodedFramesX, 0, avcc(hevcTrail))),
			tagBytes(flv.TagAudio, 20, enhancedAudio(flv.FourCCOpus, flv.PacketCodedFrames, []byte{0xFC, 3, 4})),
		}, nil), "H265+Opus", 4, 3},
		{"enhanced AV1 + MP3", bytes.Join([][]byte{hdr,
			tagBytes(flv.TagVideo, 0, enhancedVideo(flv.FourCCAV1, true, flv.PacketSequenceStart, 0, av1C)),
			tagBytes(flv.TagVideo, 0, enhancedVideo(flv.FourCCAV1, true, flv.PacketCodedFrames, 0, av1Key)),
			tagBytes(flv.TagAudio, 0, flv.AppendMP3Header(nil, 44100, 2), mp3Frame),
			tagBytes(flv.TagAudio, 26, enhancedAudio(flv.FourCCMP3, flv.PacketCodedFrames, mp3Frame)),
		}, nil), "AV1+MP3", 3, 2},
		{"enhanced VP9 + enhanced AAC", bytes.Join([][]byte{hdr,
			tagBytes(flv.TagVideo, 0, enhancedVideo(flv.FourCCVP9, true, flv.PacketSequenceStart, 0, vpcC)),
			tagBytes(flv.TagAudio, 0, enhancedAudio(flv.FourCCAAC, flv.PacketSequenceStart, []byte{0x11, 0x90})),
			// A VP9 key frame: frame marker 2, profile 0, show_existing 0,
			// frame_type 0 (key), the sync code, then the frame size.
			tagBytes(flv.TagVideo, 0, enhancedVideo(flv.FourCCVP9, true, flv.PacketCodedFrames, 0, vp9Key)),
			tagBytes(flv.TagAudio, 0, enhancedAudio(flv.FourCCAAC, flv.PacketCodedFrames, []byte{0x21, 0x10})),
		}, nil), "VP9+AAC", 2, 2},
		{"frames before their sequence header are dropped", bytes.Join([][]byte{hdr,
			tagBytes(flv.TagVideo, 0, flv.AppendVideoHeader(nil, flv.CodecAVC, true, flv.PacketCodedFrames, 0), avcc([]byte{0x65, 0x88})),
			tagBytes(flv.TagAudio, 0, flv.AppendAACHeader(nil, flv.PacketCodedFrames), []byte{0x21, 0x10}),
		}, nil), "", 0, 0},
	}
}

func TestDemuxCodecs(t *testing.T) {
	for _, tc := range demuxCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			rec := checkDemux(t, tc.flv)
			var v, a pipeline.Codec
			keys := 0
			for _, au := range rec.units {
				if au.Track.Kind() == pipeline.KindVideo {
					v = au.Track.Codec
				} else {
					a = au.Track.Codec
				}
				if au.Key {
					keys++
				}
			}
			got := ""
			if len(rec.units) > 0 {
				got = v.String() + "+" + a.String()
			}
			if got != tc.codecs || len(rec.units) != tc.units || keys != tc.keys {
				t.Fatalf("got %s, %d units, %d keys; want %s, %d, %d", got, len(rec.units), keys, tc.codecs, tc.units, tc.keys)
			}
		})
	}
}

func TestDemuxCompositionTime(t *testing.T) {
	avcC := []byte{1, 0x64, 0, 0x1F, 0xFF, 0xE1, 0, 4, 0x67, 0x64, 0, 0x1F, 1, 0, 2, 0x68, 0xEE}
	b := bytes.Join([][]byte{flv.AppendFileHeader(nil, false, true),
		tagBytes(flv.TagVideo, 0, flv.AppendVideoHeader(nil, flv.CodecAVC, true, flv.PacketSequenceStart, 0), avcC),
		tagBytes(flv.TagVideo, 1000, flv.AppendVideoHeader(nil, flv.CodecAVC, true, flv.PacketCodedFrames, 66), avcc([]byte{0x65, 0x88})),
		tagBytes(flv.TagVideo, 1033, flv.AppendVideoHeader(nil, flv.CodecAVC, false, flv.PacketCodedFrames, -33), avcc([]byte{0x41, 0x9A})),
	}, nil)
	rec := checkDemux(t, b)
	if len(rec.units) != 2 {
		t.Fatalf("%d units, want 2", len(rec.units))
	}
	if u := rec.units[0]; u.DTS != time.Second || u.PTS != 1066*time.Millisecond || !u.Key {
		t.Errorf("first unit DTS %v PTS %v key %v", u.DTS, u.PTS, u.Key)
	}
	if u := rec.units[1]; u.DTS != 1033*time.Millisecond || u.PTS != time.Second || u.Key {
		t.Errorf("second unit DTS %v PTS %v key %v", u.DTS, u.PTS, u.Key)
	}
	if !rec.video || rec.audio {
		t.Errorf("header flags announced video %v audio %v", rec.video, rec.audio)
	}
	if _, err := codec.H264(avcC); err != nil {
		t.Fatal(err)
	}
}

// FuzzDemux feeds arbitrary bytes through the FLV ingest path: FLV reader,
// tag demuxer, access units. Whatever the input, it must not panic, must
// report errors as *flv.ParseError with an offset inside the input, and the
// units it produces must survive re-encoding by the output path unchanged.
func FuzzDemux(f *testing.F) {
	for _, tc := range demuxCases(f) {
		f.Add(tc.flv)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		checkDemux(t, b)
	})
}
