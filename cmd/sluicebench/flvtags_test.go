package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// tagInfo is what a test compares of a parsed tag.
type tagInfo struct {
	Type      uint8
	Timestamp uint32
	Size      uint32
	Head      string
}

// flvHeader is a 9-byte FLV file header with audio and video, then
// PreviousTagSize0 (FLV v10.1 §E.2, §E.3).
var flvHeader = []byte{'F', 'L', 'V', 1, 5, 0, 0, 0, 9, 0, 0, 0, 0}

// appendTag appends a tag and its PreviousTagSize, written independently
// of the reader under test.
func appendTag(dst []byte, typ uint8, ts uint32, body []byte) []byte {
	n := len(body)
	dst = append(dst, typ, byte(n>>16), byte(n>>8), byte(n), byte(ts>>16), byte(ts>>8), byte(ts), byte(ts>>24), 0, 0, 0)
	dst = append(dst, body...)
	return binary.BigEndian.AppendUint32(dst, uint32(n+11))
}

func parseTags(b []byte, bufSize int) ([]tagInfo, error) {
	tr := newTagReader(bytes.NewReader(b), make([]byte, bufSize))
	var out []tagInfo
	for {
		t, err := tr.Next()
		if err != nil {
			return out, err
		}
		out = append(out, tagInfo{Type: t.Type, Timestamp: t.Timestamp, Size: t.Size, Head: string(t.head())})
		if tr.Consumed() > uint64(len(b)) {
			return out, errors.New("consumed more than the input")
		}
	}
}

type tagCase struct {
	name string
	in   []byte
	want []tagInfo
	err  string
}

func tagCases() []tagCase {
	big := cat(keyAVC, seq(3000, 1))
	longHeader := []byte{'F', 'L', 'V', 1, 5, 0, 0, 0, 12, 0xaa, 0xbb, 0xcc, 0, 0, 0, 0}
	return []tagCase{
		{
			name: "header only",
			in:   flvHeader,
		},
		{
			name: "script, sequence headers, frames",
			in: appendTag(appendTag(appendTag(appendTag(appendTag(bytes.Clone(flvHeader),
				tagScript, 0, seq(40, 2)),
				tagVideo, 0, cat(seqAVC, seq(30, 3))),
				tagAudio, 0, []byte{0xaf, 0, 0x12, 0x10}),
				tagVideo, 0, big),
				tagAudio, 23, []byte{0xaf, 1}),
			want: []tagInfo{
				{Type: tagScript, Size: 40, Head: string(seq(5, 2))},
				{Type: tagVideo, Size: 35, Head: string(seqAVC)},
				{Type: tagAudio, Size: 4, Head: "\xaf\x00\x12\x10"},
				{Type: tagVideo, Size: 3005, Head: string(keyAVC)},
				{Type: tagAudio, Timestamp: 23, Size: 2, Head: "\xaf\x01"},
			},
		},
		{
			name: "extended timestamp byte",
			in:   appendTag(bytes.Clone(flvHeader), tagVideo, 0x12345678, interAVC),
			want: []tagInfo{{Type: tagVideo, Timestamp: 0x12345678, Size: 5, Head: string(interAVC)}},
		},
		{
			name: "longer file header",
			in:   appendTag(bytes.Clone(longHeader), tagVideo, 1, interAVC),
			want: []tagInfo{{Type: tagVideo, Timestamp: 1, Size: 5, Head: string(interAVC)}},
		},
		{
			name: "empty tag",
			in:   appendTag(bytes.Clone(flvHeader), tagScript, 5, nil),
			want: []tagInfo{{Type: tagScript, Timestamp: 5}},
		},
		{
			name: "not FLV",
			in:   []byte("HTTP/1.1 200 OK\r\n\r\n"),
			err:  "no FLV signature",
		},
		{
			name: "header size below 9",
			in:   []byte{'F', 'L', 'V', 1, 5, 0, 0, 0, 8, 0, 0, 0, 0},
			err:  "bad FLV header size",
		},
		{
			name: "PreviousTagSize does not match",
			in:   append(appendTag(bytes.Clone(flvHeader), tagVideo, 0, interAVC)[:len(flvHeader)+16], 0, 0, 0, 99),
			err:  "PreviousTagSize",
		},
		{
			name: "cut inside a tag",
			in:   appendTag(bytes.Clone(flvHeader), tagVideo, 0, big)[:len(flvHeader)+500],
			err:  io.ErrUnexpectedEOF.Error(),
		},
		{
			name: "cut inside a tag header",
			in:   append(bytes.Clone(flvHeader), tagVideo, 0, 0),
			err:  io.ErrUnexpectedEOF.Error(),
		},
	}
}

func TestTagReader(t *testing.T) {
	for _, tc := range tagCases() {
		t.Run(tc.name, func(t *testing.T) {
			for _, bufSize := range []int{16, 64 << 10} {
				got, err := parseTags(tc.in, bufSize)
				if tc.err == "" {
					if err != io.EOF {
						t.Fatalf("buffer %d: err = %v, want a clean EOF", bufSize, err)
					}
				} else if err == nil || !bytes.Contains([]byte(err.Error()), []byte(tc.err)) {
					t.Fatalf("buffer %d: err = %v, want %q", bufSize, err, tc.err)
				}
				if len(got) != len(tc.want) {
					t.Fatalf("buffer %d: %d tags, want %d: %+v", bufSize, len(got), len(tc.want), got)
				}
				for i := range got {
					if got[i] != tc.want[i] {
						t.Fatalf("buffer %d: tag %d = %+v, want %+v", bufSize, i, got[i], tc.want[i])
					}
				}
			}
		})
	}
}

// TestTagReaderOnFixture reads the ffmpeg-made fixture and finds what a
// player needs: a sequence header, then a keyframe every 2 s.
func TestTagReaderOnFixture(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "bench", "tiny.flv"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := parseTags(b, 4096)
	if err != io.EOF {
		t.Fatalf("parse: %v", err)
	}
	var keys []uint32
	video, audio := 0, 0
	sawConfig := false
	for _, tag := range got {
		switch tag.Type {
		case tagVideo:
			switch classifyVideo([]byte(tag.Head)) {
			case videoConfig:
				sawConfig = true
			case videoKeyFrame:
				if !sawConfig {
					t.Fatal("keyframe before the sequence header")
				}
				keys = append(keys, tag.Timestamp)
				video++
			case videoFrame:
				video++
			}
		case tagAudio:
			audio++
		}
	}
	// 4 s at 15 fps with a 2 s GOP; AAC at 44.1 kHz is ~43 frames a second.
	if video != 60 || len(keys) != 2 || keys[1] != 2000 || audio < 160 {
		t.Fatalf("video %d, keyframes at %v, audio %d", video, keys, audio)
	}
}

func TestClassifyVideo(t *testing.T) {
	cases := []struct {
		head []byte
		want videoKind
	}{
		{nil, videoOther},
		{keyAVC, videoKeyFrame},
		{interAVC, videoFrame},
		{seqAVC, videoConfig},
		{[]byte{0x17, 0x02}, videoOther},                  // AVC end of sequence
		{[]byte{0x17}, videoOther},                        // AVC without a packet type
		{[]byte{0x52, 0}, videoOther},                     // command frame
		{[]byte{0x12}, videoKeyFrame},                     // Sorenson H.263 keyframe: no packet type
		{[]byte{0x90, 'h', 'v', 'c', '1'}, videoConfig},   // Enhanced RTMP SequenceStart, key
		{[]byte{0x91, 'h', 'v', 'c', '1'}, videoKeyFrame}, // CodedFrames, key
		{[]byte{0xa3, 'h', 'v', 'c', '1'}, videoFrame},    // CodedFramesX, inter
		{[]byte{0x92, 'h', 'v', 'c', '1'}, videoOther},    // SequenceEnd
		{[]byte{0x94, 'h', 'v', 'c', '1'}, videoOther},    // Metadata
	}
	for _, tc := range cases {
		if got := classifyVideo(tc.head); got != tc.want {
			t.Errorf("classifyVideo(% x) = %d, want %d", tc.head, got, tc.want)
		}
	}
}

// FuzzFLVTags checks that arbitrary bytes never panic the tag reader, never
// make it read past the input, and fail only with a ParseError or a short
// read; and that tags built from the input parse back as written.
func FuzzFLVTags(f *testing.F) {
	for _, tc := range tagCases() {
		f.Add(tc.in)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		got, err := parseTags(in, 32)
		var pe *ParseError
		if err != io.EOF && err != io.ErrUnexpectedEOF && !errors.As(err, &pe) {
			t.Fatalf("unexpected error %v", err)
		}
		for _, tag := range got {
			if len(tag.Head) != min(int(tag.Size), headLen) {
				t.Fatalf("head of %d bytes for a %d-byte tag", len(tag.Head), tag.Size)
			}
		}

		// Re-read the input as tags: type, timestamp step, length, body.
		file := bytes.Clone(flvHeader)
		var want []tagInfo
		var ts uint32
		for rest := in; len(rest) >= 3; {
			typ := []uint8{tagAudio, tagVideo, tagScript}[int(rest[0])%3]
			ts += uint32(rest[1]) << (rest[1] % 24)
			n := min(int(rest[2])*13, len(rest)-3)
			body := rest[3 : 3+n]
			file = appendTag(file, typ, ts, body)
			want = append(want, tagInfo{Type: typ, Timestamp: ts, Size: uint32(n), Head: string(body[:min(n, headLen)])})
			rest = rest[3+n:]
		}
		got, err = parseTags(file, 29)
		if err != io.EOF {
			t.Fatalf("re-encoded tags: %v", err)
		}
		if len(got) != len(want) {
			t.Fatalf("re-encoded: %d tags, want %d", len(got), len(want))
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("re-encoded tag %d = %+v, want %+v", i, got[i], want[i])
			}
		}
	})
}
