package flv

import (
	"bytes"
	"errors"
	"io"
	"os/exec"
	"reflect"

	"github.com/sluice-media/sluice/pipeline/sluicetest"
	"testing"
)

func TestHeadersRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		b    []byte
		want Video
	}{
		{"avc key", AppendVideoHeader(nil, CodecAVC, true, PacketCodedFrames, -33), Video{FrameType: FrameKey, Key: true, Codec: CodecAVC, PacketType: PacketCodedFrames, CTS: -33}},
		{"avc seq", AppendVideoHeader(nil, CodecAVC, true, PacketSequenceStart, 0), Video{FrameType: FrameKey, Key: true, Codec: CodecAVC, PacketType: PacketSequenceStart}},
		{"hevc frames", AppendExVideoHeader(nil, FourCCHEVC, false, PacketCodedFrames, 66), Video{FrameType: FrameInter, Enhanced: true, FourCC: FourCCHEVC, PacketType: PacketCodedFrames, CTS: 66}},
		{"hevc framesX", AppendExVideoHeader(nil, FourCCHEVC, true, PacketCodedFramesX, 0), Video{FrameType: FrameKey, Key: true, Enhanced: true, FourCC: FourCCHEVC, PacketType: PacketCodedFramesX}},
		{"av1", AppendExVideoHeader(nil, FourCCAV1, true, PacketCodedFrames, 0), Video{FrameType: FrameKey, Key: true, Enhanced: true, FourCC: FourCCAV1, PacketType: PacketCodedFrames}},
	} {
		b := append(tc.b, 0xAA, 0xBB)
		got, err := ParseVideo(b)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if !bytes.Equal(got.Payload, []byte{0xAA, 0xBB}) {
			t.Errorf("%s: payload % x", tc.name, got.Payload)
		}
		got.Payload = nil
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s:\n got %+v\nwant %+v", tc.name, got, tc.want)
		}
	}
	a, err := ParseAudio(append(AppendAACHeader(nil, PacketSequenceStart), 0x12, 0x10))
	if err != nil || a.Format != SoundAAC || a.PacketType != PacketSequenceStart || len(a.Payload) != 2 {
		t.Errorf("aac: %+v %v", a, err)
	}
	a, err = ParseAudio(append(AppendExAudioHeader(nil, FourCCOpus, PacketCodedFrames), 1))
	if err != nil || a.Format != SoundExHeader || a.FourCC != FourCCOpus || a.PacketType != PacketCodedFrames || len(a.Payload) != 1 {
		t.Errorf("opus: %+v %v", a, err)
	}
	a, err = ParseAudio(AppendMP3Header(nil, 44100, 2))
	if err != nil || a.Format != SoundMP3 || LegacyRate(a.Rate) != 44100 || !a.Stereo {
		t.Errorf("mp3: %+v %v", a, err)
	}
	if FourCCString(FourCCHEVC) != "hvc1" || FourCCString(1) != "0x00000001" {
		t.Error("FourCCString")
	}
}

func TestShortBodiesAreErrors(t *testing.T) {
	for _, b := range [][]byte{{}, {0x17}, {0x17, 1, 0}, {0x90, 'h', 'v'}, {0x91, 'h', 'v', 'c', '1', 0}} {
		if _, err := ParseVideo(b); !errors.Is(err, ErrShort) {
			t.Errorf("ParseVideo(% x) = %v, want ErrShort", b, err)
		}
	}
	for _, b := range [][]byte{{}, {0xAF}, {0x90, 'O'}} {
		if _, err := ParseAudio(b); !errors.Is(err, ErrShort) {
			t.Errorf("ParseAudio(% x) = %v, want ErrShort", b, err)
		}
	}
}

// stream builds an FLV stream of tags by hand.
func stream(tags ...[]byte) []byte {
	b := AppendFileHeader(nil, true, true)
	for i, body := range tags {
		typ := TagVideo
		if i%2 == 1 {
			typ = TagAudio
		}
		h := make([]byte, TagHeaderSize)
		PutTagHeader(h, typ, len(body), uint32(i)*40|0x01000000)
		b = append(b, h...)
		b = append(b, body...)
		p := make([]byte, 4)
		PutPrevTagSize(p, uint32(TagHeaderSize+len(body)))
		b = append(b, p...)
	}
	return b
}

func TestReader(t *testing.T) {
	src := stream([]byte{0x17, 0, 0, 0, 0}, []byte{0xAF, 1, 9})
	r := NewReader(bytes.NewReader(src), 1<<20)
	h, err := r.ReadFileHeader()
	if err != nil || !h.HasAudio || !h.HasVideo {
		t.Fatalf("header %+v %v", h, err)
	}
	tag, err := r.ReadTag()
	if err != nil || tag.Type != TagVideo || tag.Timestamp != 0x01000000 || len(tag.Data) != 5 {
		t.Fatalf("tag 1: %+v %v", tag, err)
	}
	tag, err = r.ReadTag()
	if err != nil || tag.Type != TagAudio || tag.Timestamp != 0x01000028 || !bytes.Equal(tag.Data, []byte{0xAF, 1, 9}) {
		t.Fatalf("tag 2: %+v %v", tag, err)
	}
	if _, err := r.ReadTag(); err != io.EOF {
		t.Fatalf("end: %v, want io.EOF", err)
	}
}

func TestReaderErrors(t *testing.T) {
	good := stream([]byte{0x17, 0, 0, 0, 0})
	lying := append([]byte{}, good...)
	lying[HeaderSize+3] = 0x30 // size 48, but only 5 bytes and a trailer follow
	badPrev := append([]byte{}, good...)
	badPrev[len(badPrev)-1] = 99
	huge := append([]byte{}, good...)
	huge[HeaderSize+1] = 0x7f
	badType := append([]byte{}, good...)
	badType[HeaderSize] = 7
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"not flv", []byte("GET / HTTP/1.1\r\n\r\n")},
		{"truncated header", good[:5]},
		{"lying size", lying},
		{"bad PreviousTagSize", badPrev},
		{"oversized", huge},
		{"unknown type", badType},
		{"truncated tag", good[:len(good)-3]},
	} {
		r := NewReader(bytes.NewReader(tc.b), 1<<20)
		_, err := r.ReadFileHeader()
		for err == nil {
			_, err = r.ReadTag()
		}
		var pe *ParseError
		if !errors.As(err, &pe) {
			t.Errorf("%s: %v, want a *ParseError", tc.name, err)
		}
	}
}

// TestReadsFFmpegOutput reads a file ffmpeg muxed: the committed fixture,
// remuxed to FLV.
func TestReadsFFmpegOutput(t *testing.T) {
	ffmpeg := sluicetest.Tool(t, "ffmpeg")
	out, err := exec.Command(ffmpeg, "-v", "error", "-i", sluicetest.Fixture("av.mp4"), "-c", "copy", "-f", "flv", "-").Output()
	if err != nil {
		t.Fatal(err)
	}
	r := NewReader(bytes.NewReader(out), 1<<20)
	if _, err := r.ReadFileHeader(); err != nil {
		t.Fatal(err)
	}
	var video, audio, keys, seq int
	var meta string
	for {
		tag, err := r.ReadTag()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		switch tag.Type {
		case TagScript:
			meta, _, err = ParseScript(tag.Data)
		case TagVideo:
			var v Video
			v, err = ParseVideo(tag.Data)
			switch v.PacketType {
			case PacketSequenceStart:
				seq++
			case PacketCodedFrames:
				video++
				if v.Key {
					keys++
				}
			}
		case TagAudio:
			_, err = ParseAudio(tag.Data)
			audio++
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	// 4 s at 30 fps with a keyframe every 2 s; AAC at 48 kHz.
	if meta != "onMetaData" || video != 120 || keys != 2 || seq != 1 || audio < 180 {
		t.Errorf("meta %q video %d keys %d seq %d audio %d", meta, video, keys, seq, audio)
	}
}

func TestScriptRoundTrip(t *testing.T) {
	b, err := AppendScript(nil, "onMetaData", 42.0)
	if err != nil {
		t.Fatal(err)
	}
	name, vals, err := ParseScript(b)
	if err != nil || name != "onMetaData" || len(vals) != 1 || vals[0] != 42.0 {
		t.Errorf("%q %v %v", name, vals, err)
	}
}

// FuzzReader feeds arbitrary bytes through the reader and the body
// parsers: errors are fine, panics and unbounded allocations are not.
func FuzzReader(f *testing.F) {
	f.Add(stream([]byte{0x17, 0, 0, 0, 0}, []byte{0xAF, 1, 9}))
	f.Add(stream(AppendExVideoHeader(nil, FourCCHEVC, true, PacketCodedFrames, 5), AppendExAudioHeader(nil, FourCCOpus, 0)))
	f.Add([]byte("FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00\x12\x00\x00\x05\x00\x00\x00\x00\x00\x00\x00\x02\x00\x01a\x00\x00\x00\x10"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := NewReader(bytes.NewReader(b), 1<<16)
		if _, err := r.ReadFileHeader(); err != nil {
			return
		}
		for range 1000 {
			tag, err := r.ReadTag()
			if err != nil {
				return
			}
			if len(tag.Data) > 1<<16 {
				t.Fatalf("tag of %d bytes passed a 64 KiB limit", len(tag.Data))
			}
			switch tag.Type {
			case TagVideo:
				_, _ = ParseVideo(tag.Data)
			case TagAudio:
				_, _ = ParseAudio(tag.Data)
			case TagScript:
				_, _, _ = ParseScript(tag.Data)
			}
		}
	})
}
