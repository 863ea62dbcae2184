package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/bluenviron/gortmplib/pkg/bytecounter"
	"github.com/bluenviron/gortmplib/pkg/rawmessage"
)

// msgInfo is what a test compares of a parsed message.
type msgInfo struct {
	CSID      uint32
	Type      uint8
	StreamID  uint32
	Timestamp uint32
	Length    uint32
	Head      string
	Body      string
}

func info(m *rtmpMessage) msgInfo {
	return msgInfo{CSID: m.CSID, Type: m.Type, StreamID: m.StreamID, Timestamp: m.Timestamp, Length: m.Length,
		Head: string(m.head()), Body: string(m.Body)}
}

// parseAll reads every message of b; err is what ended the stream.
func parseAll(b []byte, chunkBuf int) ([]msgInfo, error) {
	cr := newChunkReader(bytes.NewReader(b), make([]byte, chunkBuf), 1<<16)
	var out []msgInfo
	for {
		m, err := cr.Next()
		if err != nil {
			return out, err
		}
		out = append(out, info(m))
		if cr.Consumed() > uint64(len(b)) {
			return out, errors.New("consumed more than the input")
		}
	}
}

// hdr builds a chunk header by hand: basic header then the fields of the
// format (timestamp or delta, length, type, little-endian stream id).
func hdr(format byte, csid uint32, ts, length uint32, typ byte, msid uint32) []byte {
	var b []byte
	switch {
	case csid < 64:
		b = append(b, format<<6|byte(csid))
	case csid < 320:
		b = append(b, format<<6, byte(csid-64))
	default:
		b = append(b, format<<6|1, byte(csid-64), byte((csid-64)>>8))
	}
	if format < 3 {
		f := min(ts, 0xFFFFFF)
		b = append(b, byte(f>>16), byte(f>>8), byte(f))
	}
	if format < 2 {
		b = append(b, byte(length>>16), byte(length>>8), byte(length), typ)
	}
	if format == 0 {
		b = binary.LittleEndian.AppendUint32(b, msid)
	}
	if format < 3 && ts >= 0xFFFFFF {
		b = binary.BigEndian.AppendUint32(b, ts)
	}
	return b
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func seq(n int, start byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = start + byte(i)
	}
	return b
}

var (
	keyAVC   = []byte{0x17, 0x01, 0, 0, 0}
	interAVC = []byte{0x27, 0x01, 0, 0, 0}
	seqAVC   = []byte{0x17, 0x00, 0, 0, 0}
)

type chunkCase struct {
	name string
	in   []byte
	want []msgInfo
	err  string // "" for a clean io.EOF at the end
}

func chunkCases() []chunkCase {
	big := cat(keyAVC, seq(295, 9)) // 300 bytes: three 128-byte chunks
	return []chunkCase{
		{
			name: "one video message in one chunk",
			in:   cat(hdr(0, 6, 40, 7, msgVideo, 1), keyAVC, []byte{1, 2}),
			want: []msgInfo{{CSID: 6, Type: msgVideo, StreamID: 1, Timestamp: 40, Length: 7, Head: string(keyAVC)}},
		},
		{
			name: "a message split at the default chunk size",
			in:   cat(hdr(0, 6, 0, 300, msgVideo, 1), big[:128], hdr(3, 6, 0, 0, 0, 0), big[128:256], hdr(3, 6, 0, 0, 0, 0), big[256:]),
			want: []msgInfo{{CSID: 6, Type: msgVideo, StreamID: 1, Length: 300, Head: string(keyAVC)}},
		},
		{
			name: "set chunk size then a message in one chunk",
			in: cat(hdr(0, 2, 0, 4, msgSetChunkSize, 0), []byte{0, 0, 0x10, 0},
				hdr(0, 6, 5, 300, msgVideo, 1), big),
			want: []msgInfo{
				{CSID: 2, Type: msgSetChunkSize, Length: 4, Head: "\x00\x00\x10\x00", Body: "\x00\x00\x10\x00"},
				{CSID: 6, Type: msgVideo, StreamID: 1, Timestamp: 5, Length: 300, Head: string(keyAVC)},
			},
		},
		{
			name: "type 1, 2 and 3 headers carry deltas",
			in: cat(hdr(0, 4, 100, 2, msgAudio, 1), []byte{0xaf, 1},
				hdr(1, 4, 23, 3, msgAudio, 0), []byte{0xaf, 1, 9},
				hdr(2, 4, 21, 0, 0, 0), []byte{0xaf, 1, 8},
				hdr(3, 4, 0, 0, 0, 0), []byte{0xaf, 1, 7}),
			want: []msgInfo{
				{CSID: 4, Type: msgAudio, StreamID: 1, Timestamp: 100, Length: 2, Head: "\xaf\x01"},
				{CSID: 4, Type: msgAudio, StreamID: 1, Timestamp: 123, Length: 3, Head: "\xaf\x01\x09"},
				{CSID: 4, Type: msgAudio, StreamID: 1, Timestamp: 144, Length: 3, Head: "\xaf\x01\x08"},
				{CSID: 4, Type: msgAudio, StreamID: 1, Timestamp: 165, Length: 3, Head: "\xaf\x01\x07"},
			},
		},
		{
			name: "type 3 after type 0 repeats the timestamp",
			in:   cat(hdr(0, 4, 100, 2, msgAudio, 1), []byte{0xaf, 1}, hdr(3, 4, 0, 0, 0, 0), []byte{0xaf, 1}),
			want: []msgInfo{
				{CSID: 4, Type: msgAudio, StreamID: 1, Timestamp: 100, Length: 2, Head: "\xaf\x01"},
				{CSID: 4, Type: msgAudio, StreamID: 1, Timestamp: 100, Length: 2, Head: "\xaf\x01"},
			},
		},
		{
			name: "extended timestamp, repeated on the continuation",
			in: cat(hdr(0, 6, 0x01000000, 300, msgVideo, 1), big[:128],
				hdr(3, 6, 0, 0, 0, 0), []byte{1, 0, 0, 0}, big[128:256],
				hdr(3, 6, 0, 0, 0, 0), []byte{1, 0, 0, 0}, big[256:]),
			want: []msgInfo{{CSID: 6, Type: msgVideo, StreamID: 1, Timestamp: 0x01000000, Length: 300, Head: string(keyAVC)}},
		},
		{
			name: "two- and three-byte chunk stream ids",
			in: cat(hdr(0, 70, 1, 5, msgVideo, 1), interAVC,
				hdr(0, 400, 2, 5, msgVideo, 1), seqAVC),
			want: []msgInfo{
				{CSID: 70, Type: msgVideo, StreamID: 1, Timestamp: 1, Length: 5, Head: string(interAVC)},
				{CSID: 400, Type: msgVideo, StreamID: 1, Timestamp: 2, Length: 5, Head: string(seqAVC)},
			},
		},
		{
			name: "chunk streams interleave",
			in: cat(hdr(0, 6, 10, 300, msgVideo, 1), big[:128],
				hdr(0, 4, 11, 2, msgAudio, 1), []byte{0xaf, 1},
				hdr(3, 6, 0, 0, 0, 0), big[128:256],
				hdr(3, 6, 0, 0, 0, 0), big[256:]),
			want: []msgInfo{
				{CSID: 4, Type: msgAudio, StreamID: 1, Timestamp: 11, Length: 2, Head: "\xaf\x01"},
				{CSID: 6, Type: msgVideo, StreamID: 1, Timestamp: 10, Length: 300, Head: string(keyAVC)},
			},
		},
		{
			name: "abort drops a partial message",
			in: cat(hdr(0, 6, 10, 300, msgVideo, 1), big[:128],
				hdr(0, 2, 0, 4, msgAbort, 0), []byte{0, 0, 0, 6},
				hdr(1, 6, 33, 5, msgVideo, 0), interAVC),
			want: []msgInfo{
				{CSID: 2, Type: msgAbort, Length: 4, Head: "\x00\x00\x00\x06", Body: "\x00\x00\x00\x06"},
				{CSID: 6, Type: msgVideo, StreamID: 1, Timestamp: 43, Length: 5, Head: string(interAVC)},
			},
		},
		{
			name: "a command is assembled",
			in:   cat(hdr(0, 3, 0, 130, msgCommandAMF0, 0), seq(128, 0), hdr(3, 3, 0, 0, 0, 0), seq(2, 128)),
			want: []msgInfo{{CSID: 3, Type: msgCommandAMF0, Length: 130, Head: string(seq(5, 0)), Body: string(seq(130, 0))}},
		},
		{
			name: "an empty message",
			in:   cat(hdr(0, 5, 7, 0, msgDataAMF0, 1)),
			want: []msgInfo{{CSID: 5, Type: msgDataAMF0, StreamID: 1, Timestamp: 7}},
		},
		{
			name: "type 1 before any type 0",
			in:   hdr(1, 6, 33, 5, msgVideo, 0),
			err:  "before any type 0 header",
		},
		{
			name: "type 0 inside a message",
			in:   cat(hdr(0, 6, 0, 300, msgVideo, 1), big[:128], hdr(0, 6, 0, 5, msgVideo, 1)),
			err:  "inside a 300-byte message",
		},
		{
			name: "chunk size 0",
			in:   cat(hdr(0, 2, 0, 4, msgSetChunkSize, 0), []byte{0, 0, 0, 0}),
			err:  "chunk size 0",
		},
		{
			name: "command larger than the limit",
			in:   hdr(0, 3, 0, 0x20000, msgCommandAMF0, 0),
			err:  "larger than",
		},
		{
			name: "cut inside a chunk",
			in:   cat(hdr(0, 6, 0, 300, msgVideo, 1), big[:100]),
			err:  io.ErrUnexpectedEOF.Error(),
		},
		{
			name: "cut inside a header",
			in:   hdr(0, 6, 0, 300, msgVideo, 1)[:6],
			err:  io.ErrUnexpectedEOF.Error(),
		},
	}
}

func TestChunkReader(t *testing.T) {
	for _, tc := range chunkCases() {
		t.Run(tc.name, func(t *testing.T) {
			// A tiny buffer forces every refill and compaction path.
			for _, bufSize := range []int{32, 64 << 10} {
				got, err := parseAll(tc.in, bufSize)
				if tc.err == "" {
					if err != io.EOF {
						t.Fatalf("buffer %d: err = %v, want a clean EOF", bufSize, err)
					}
				} else if err == nil || !bytes.Contains([]byte(err.Error()), []byte(tc.err)) {
					t.Fatalf("buffer %d: err = %v, want %q", bufSize, err, tc.err)
				}
				if d := diffMsgs(tc.want, got); d != "" {
					t.Fatalf("buffer %d: messages (-want +got):\n%s", bufSize, d)
				}
			}
		})
	}
}

func TestTooManyChunkStreams(t *testing.T) {
	var in []byte
	for id := uint32(64); id < 64+maxChunkStreams+1; id++ {
		in = append(in, hdr(0, id, 0, 0, msgVideo, 1)...)
	}
	got, err := parseAll(in, 1024)
	var pe *ParseError
	if !errors.As(err, &pe) || len(got) != maxChunkStreams {
		t.Fatalf("got %d messages, err %v; want %d then a ParseError", len(got), err, maxChunkStreams)
	}
}

// genMessage is a message for the encoders under test.
type genMessage struct {
	csid byte
	typ  uint8
	msid uint32
	ts   uint32
	body []byte
}

// encodeGortmplib encodes msgs with the RTMP library's chunk writer at
// chunkSize, announcing the size first: a second, independent encoder.
func encodeGortmplib(t testing.TB, msgs []genMessage, chunkSize uint32) []byte {
	var buf bytes.Buffer
	w := rawmessage.NewWriter(&buf, bytecounter.NewWriter(&buf), false)
	write := func(m *rawmessage.Message) {
		if err := w.Write(m); err != nil {
			t.Fatal(err)
		}
	}
	write(&rawmessage.Message{ChunkStreamID: 2, Type: msgSetChunkSize, Body: binary.BigEndian.AppendUint32(nil, chunkSize)})
	w.SetChunkSize(chunkSize)
	for _, m := range msgs {
		// The library writes the message stream id big-endian; swap so the
		// bytes on the wire are the little-endian msid.
		write(&rawmessage.Message{ChunkStreamID: m.csid, Type: m.typ, MessageStreamID: bits.ReverseBytes32(m.msid),
			Timestamp: time.Duration(m.ts) * time.Millisecond, Body: m.body})
	}
	return buf.Bytes()
}

func wantInfo(msgs []genMessage, chunkSize uint32) []msgInfo {
	out := []msgInfo{{CSID: 2, Type: msgSetChunkSize, Length: 4, Head: string(binary.BigEndian.AppendUint32(nil, chunkSize)), Body: string(binary.BigEndian.AppendUint32(nil, chunkSize))}}
	for _, m := range msgs {
		mi := msgInfo{CSID: uint32(m.csid), Type: m.typ, StreamID: m.msid, Timestamp: m.ts, Length: uint32(len(m.body)), Head: string(m.body[:min(len(m.body), headLen)])}
		if keep(m.typ) {
			mi.Body = string(m.body)
		}
		out = append(out, mi)
	}
	return out
}

func TestChunkReaderReadsTheLibraryWriter(t *testing.T) {
	msgs := []genMessage{
		{csid: 3, typ: msgCommandAMF0, ts: 0, body: seq(200, 0)},
		{csid: 6, typ: msgVideo, msid: 1, ts: 0, body: cat(seqAVC, seq(40, 1))},
		{csid: 6, typ: msgVideo, msid: 1, ts: 0, body: cat(keyAVC, seq(5000, 2))},
		{csid: 4, typ: msgAudio, msid: 1, ts: 10, body: seq(300, 3)},
		{csid: 6, typ: msgVideo, msid: 1, ts: 33, body: cat(interAVC, seq(900, 4))},
		{csid: 4, typ: msgAudio, msid: 1, ts: 33, body: seq(300, 5)},
		{csid: 6, typ: msgVideo, msid: 1, ts: 66, body: cat(interAVC, seq(900, 6))}, // type 3: same delta and length
		{csid: 6, typ: msgVideo, msid: 1, ts: 50, body: cat(interAVC, seq(10, 7))},  // backwards: type 0
		{csid: 4, typ: msgAudio, msid: 1, ts: 0x1000000, body: seq(3, 8)},           // extended
		{csid: 4, typ: msgAudio, msid: 1, ts: 0x1000010, body: seq(3, 9)},
	}
	for _, cs := range []uint32{1, 128, 4096, 65536} {
		got, err := parseAll(encodeGortmplib(t, msgs, cs), 4096)
		if err != io.EOF {
			t.Fatalf("chunk size %d: %v", cs, err)
		}
		if d := diffMsgs(wantInfo(msgs, cs), got); d != "" {
			t.Fatalf("chunk size %d (-want +got):\n%s", cs, d)
		}
	}
}

func TestAppendMessageRoundTrip(t *testing.T) {
	for _, csid := range []uint32{2, 63, 64, 319, 320, 65599} {
		for _, ts := range []uint32{0, 0xFFFFFE, 0xFFFFFF, 0xFFFFFFFF} {
			body := seq(1000, byte(csid))
			in := appendMessage(nil, csid, msgCommandAMF0, 7, ts, body, 128)
			got, err := parseAll(in, 256)
			want := []msgInfo{{CSID: csid, Type: msgCommandAMF0, StreamID: 7, Timestamp: ts, Length: 1000, Head: string(body[:5]), Body: string(body)}}
			if err != io.EOF {
				t.Fatalf("csid %d ts %d: %v", csid, ts, err)
			}
			if d := diffMsgs(want, got); d != "" {
				t.Fatalf("csid %d ts %d (-want +got):\n%s", csid, ts, d)
			}
		}
	}
}

// TestCapturedStreams parses what real servers sent a player (the bytes
// after the handshake; see testdata/README.md) and checks the result
// against the RTMP library's own chunk reader, message by message.
func TestCapturedStreams(t *testing.T) {
	files, _ := filepath.Glob("testdata/capture/*.bin")
	if len(files) == 0 {
		t.Fatal("no captures in testdata/capture")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			got, err := parseAll(b, 64<<10)
			if err != io.ErrUnexpectedEOF && err != io.EOF {
				t.Fatalf("parse: %v", err)
			}
			want := referenceParse(b)
			if len(want) < 50 {
				t.Fatalf("reference parser found only %d messages", len(want))
			}
			if d := diffMsgs(want, got); d != "" {
				t.Fatalf("(-reference +ours):\n%s", d)
			}
			// The stream is playable as the tool sees it: a sequence header,
			// then a keyframe, and video timestamps that never go back.
			var kinds []videoKind
			var last uint32
			for _, m := range got {
				if m.Type != msgVideo {
					continue
				}
				if m.Timestamp < last {
					t.Fatalf("video timestamp went back: %d after %d", m.Timestamp, last)
				}
				last = m.Timestamp
				kinds = append(kinds, classifyVideo([]byte(m.Head)))
			}
			if len(kinds) < 10 || kinds[0] != videoConfig {
				t.Fatalf("video kinds %v: want a sequence header first", kinds[:min(len(kinds), 5)])
			}
		})
	}
}

// referenceParse reads b with the RTMP library's raw message reader,
// applying chunk size changes as a client does, until the data ends.
func referenceParse(b []byte) []msgInfo {
	r := bytes.NewReader(b)
	rr := rawmessage.NewReader(r, bytecounter.NewReader(r), func(uint32) error { return nil })
	var out []msgInfo
	for {
		m, err := rr.Read()
		if err != nil {
			return out
		}
		if m.Type == msgSetChunkSize && len(m.Body) >= 4 {
			_ = rr.SetChunkSize(binary.BigEndian.Uint32(m.Body) & 0x7FFFFFFF)
		}
		mi := msgInfo{CSID: uint32(m.ChunkStreamID), Type: m.Type, StreamID: bits.ReverseBytes32(m.MessageStreamID),
			Timestamp: uint32(m.Timestamp / time.Millisecond), Length: uint32(len(m.Body)), Head: string(m.Body[:min(len(m.Body), headLen)])}
		if keep(m.Type) {
			mi.Body = string(m.Body)
		}
		out = append(out, mi)
	}
}

// FuzzChunkParser checks two things on every input: parsing arbitrary
// bytes never panics, never reads past the input, and fails only with a
// ParseError or a short read; and the input read as a list of messages,
// encoded by the RTMP library at a chunk size the input picks, parses back
// to exactly those messages.
func FuzzChunkParser(f *testing.F) {
	for _, tc := range chunkCases() {
		f.Add(tc.in)
	}
	if b, err := os.ReadFile("testdata/capture/nginx-rtmp.bin"); err == nil {
		f.Add(b[:min(len(b), 4096)])
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		got, err := parseAll(in, 64)
		var pe *ParseError
		if err != io.EOF && err != io.ErrUnexpectedEOF && !errors.As(err, &pe) {
			t.Fatalf("unexpected error %v", err)
		}
		for _, m := range got {
			if keep(m.Type) && uint32(len(m.Body)) != m.Length {
				t.Fatalf("kept body of %d bytes for a %d-byte message", len(m.Body), m.Length)
			}
			if len(m.Head) != min(int(m.Length), headLen) {
				t.Fatalf("head of %d bytes for a %d-byte message", len(m.Head), m.Length)
			}
		}

		msgs, cs := messagesFrom(in)
		if len(msgs) == 0 {
			return
		}
		got, err = parseAll(encodeGortmplib(t, msgs, cs), 97)
		if err != io.EOF {
			t.Fatalf("re-encoded messages: %v", err)
		}
		if d := diffMsgs(wantInfo(msgs, cs), got); d != "" {
			t.Fatalf("re-encoded messages (-want +got):\n%s", d)
		}
	})
}

// messagesFrom reads fuzz input as a chunk size and a list of messages:
// each is csid, type, timestamp step and a length byte, then the body.
func messagesFrom(in []byte) ([]genMessage, uint32) {
	if len(in) < 2 {
		return nil, 0
	}
	cs := uint32(in[0])<<4 | uint32(in[1]) + 1
	in = in[2:]
	var out []genMessage
	var ts [64]uint32
	types := []uint8{msgAudio, msgVideo, msgDataAMF0, msgCommandAMF0, msgUserControl}
	for len(in) >= 4 && len(out) < 64 {
		csid := 3 + in[0]%60
		typ := types[int(in[1])%len(types)]
		ts[csid] += uint32(in[2]) * uint32(in[2])
		n := min(int(in[3])*7, len(in)-4)
		out = append(out, genMessage{csid: csid, typ: typ, msid: 1, ts: ts[csid], body: in[4 : 4+n]})
		in = in[4+n:]
	}
	return out, cs
}

// diffMsgs describes the first difference between two message lists, or
// returns "".
func diffMsgs(want, got []msgInfo) string {
	for i := range max(len(want), len(got)) {
		switch {
		case i >= len(want):
			return fmt.Sprintf("extra message %d: %+v", i, got[i])
		case i >= len(got):
			return fmt.Sprintf("missing message %d: %+v", i, want[i])
		case want[i] != got[i]:
			return fmt.Sprintf("message %d:\n-%+v\n+%+v", i, want[i], got[i])
		}
	}
	return ""
}
