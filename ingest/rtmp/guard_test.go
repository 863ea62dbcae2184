package rtmp

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/gortmplib/pkg/amf0"
	"github.com/bluenviron/gortmplib/pkg/bytecounter"
	"github.com/bluenviron/gortmplib/pkg/message"

	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/config"
)

// testLimits are the defaults, but for a 1 MiB message bound that keeps
// the cases small.
var testLimits = guardLimits{chunkSize: config.DefaultRTMPMaxChunkSize, messageSize: 1 << 20,
	amfDepth: config.DefaultAMFMaxDepth, amfString: config.DefaultAMFMaxString}

// encode returns msgs as a client sends them after the handshake.
func encode(t testing.TB, msgs ...message.Message) []byte {
	t.Helper()
	var buf bytes.Buffer
	bc := bytecounter.NewWriter(&buf)
	w := message.NewWriter(bc, bc, false)
	for _, m := range msgs {
		if err := w.Write(m); err != nil {
			t.Fatalf("encode %T: %v", m, err)
		}
	}
	return buf.Bytes()
}

// readMessages reads r with the RTMP library's message reader, as the
// server does, until it fails.
func readMessages(r io.Reader) ([]message.Message, error) {
	bc := bytecounter.NewReader(r)
	mr := message.NewReader(bc, bc, func(uint32) error { return nil })
	var out []message.Message
	for {
		m, err := mr.Read()
		if err != nil {
			return out, err
		}
		out = append(out, m)
	}
}

// throughGuard reads in through a guard that starts after the handshake,
// handing it over in reads of step bytes.
func throughGuard(in []byte, lim guardLimits, step int, hit func(string)) ([]message.Message, error, *guard) {
	g := newGuard(struct {
		io.Reader
		io.Writer
	}{&stepReader{b: in, step: step}, io.Discard}, lim, hit)
	g.handshake = 0
	msgs, err := readMessages(g)
	return msgs, err, g
}

// stepReader returns at most step bytes a read.
type stepReader struct {
	b    []byte
	step int
}

func (r *stepReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), r.step)], r.b)
	r.b = r.b[n:]
	return n, nil
}

func nestedAMF(depth int) any {
	var v any = "bottom"
	for range depth {
		v = amf0.Object{{Key: "a", Value: v}}
	}
	return v
}

// lawful is a session of what clients send: commands, metadata, chunk
// size changes, media split over many chunks, timestamps past the
// extended-timestamp mark (RTMP 1.0 §5.3.1.3), an abort.
func lawful(t testing.TB) []byte {
	big := bytes.Repeat([]byte{0x17, 1, 0, 0, 0, 0xAB}, 50_000) // 300 kB, a keyframe
	video := func(ts time.Duration, body []byte) *message.Video {
		return &message.Video{ChunkStreamID: 6, MessageStreamID: 1, Codec: message.CodecH264, IsKeyFrame: true, Type: message.VideoTypeAU, DTS: ts, AU: body}
	}
	msgs := []message.Message{
		&message.CommandAMF0{ChunkStreamID: 3, Name: "connect", CommandID: 1, Arguments: []any{amf0.Object{
			{Key: "app", Value: "live"}, {Key: "tcUrl", Value: "rtmp://h/live"}, {Key: "deep", Value: nestedAMF(config.DefaultAMFMaxDepth - 1)}}}},
		&message.SetChunkSize{Value: 4096},
		&message.CommandAMF0{ChunkStreamID: 3, Name: "createStream", CommandID: 2, Arguments: []any{nil}},
		&message.DataAMF0{ChunkStreamID: 4, MessageStreamID: 1, Payload: []any{"@setDataFrame", "onMetaData", amf0.ECMAArray{
			{Key: "width", Value: float64(1920)}, {Key: "list", Value: amf0.StrictArray{float64(1), "two", nil}}, {Key: "s", Value: strings.Repeat("x", 1000)}}}},
		video(0, big[:100]),
		video(40*time.Millisecond, big),
		&message.SetChunkSize{Value: 60000},
		video(80*time.Millisecond, big),
		video(0x1000000*time.Millisecond, big[:5000]),
		video(0x1000028*time.Millisecond, big[:9000]),
		video(0x1000050*time.Millisecond, big),
		&message.SetChunkSize{Value: 128},
		video(0x1000078*time.Millisecond, big[:1000]),
		&message.AbortMessage{ChunkStreamID: 9},
		video(0x10000A0*time.Millisecond, big[:10]),
	}
	return encode(t, msgs...)
}

// TestGuardPassesLawfulSessions: whatever sizes its reads come in, the
// guard hands the library exactly what it would have read without it.
func TestGuardPassesLawfulSessions(t *testing.T) {
	in := lawful(t)
	want, werr := readMessages(bytes.NewReader(in))
	if !errors.Is(werr, io.EOF) || len(want) != 15 {
		t.Fatalf("the library alone: %d messages, %v", len(want), werr)
	}
	for _, step := range []int{1, 7, 4096, 1 << 20} {
		got, err, _ := throughGuard(in, testLimits, step, nil)
		if !errors.Is(err, io.EOF) {
			t.Fatalf("reads of %d bytes: %v", step, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("reads of %d bytes: the library read %d messages through the guard, %d without", step, len(got), len(want))
		}
	}
}

// TestGuardLimits: each attack is refused with its limit, before the
// library reads the message or allocates the chunk that carries it.
func TestGuardLimits(t *testing.T) {
	connect := func(args ...any) *message.CommandAMF0 {
		return &message.CommandAMF0{ChunkStreamID: 3, Name: "connect", CommandID: 1, Arguments: args}
	}
	// A message header announcing n bytes on chunk stream cs, and a
	// first chunk of its body.
	announce := func(cs byte, n int) []byte {
		return append([]byte{cs, 0, 0, 0, byte(n >> 16), byte(n >> 8), byte(n), 9, 1, 0, 0, 0}, make([]byte, 128)...)
	}
	for _, tc := range []struct {
		name  string
		in    []byte
		limit string // "" for an error that is no limit
		// before is how many messages the library may read first.
		before int
	}{
		{"chunk size 2^31-1", encode(t, &message.SetChunkSize{Value: 1<<31 - 1}), pipeline.LimitRTMPChunkSize, 0},
		{"chunk size 10 MiB", encode(t, &message.SetChunkSize{Value: 10 << 20}), pipeline.LimitRTMPChunkSize, 0},
		{"chunk size 1", encode(t, &message.SetChunkSize{Value: 1}), pipeline.LimitRTMPChunkSize, 0},
		{"message longer than the bound", announce(6, 2<<20), pipeline.LimitRTMPMessageSize, 0},
		{"messages assembled on many chunk streams", bytes.Join([][]byte{announce(4, 1<<20), announce(5, 1<<20), announce(6, 1<<20)}, nil), pipeline.LimitRTMPMessageSize, 0},
		{"AMF nested 10,000 deep", encode(t, connect(amf0.Object{{Key: "x", Value: nestedAMF(10000)}})), pipeline.LimitAMFDepth, 0},
		{"AMF nested one too deep", encode(t, connect(nestedAMF(config.DefaultAMFMaxDepth+1))), pipeline.LimitAMFDepth, 0},
		{"AMF strict arrays nested", encode(t, &message.DataAMF0{ChunkStreamID: 4, Payload: []any{func() any {
			var v any = nil
			for range 100 {
				v = amf0.StrictArray{v}
			}
			return v
		}()}}), pipeline.LimitAMFDepth, 0},
		{"AMF string too long", encode(t, connect(amf0.Object{{Key: "tcUrl", Value: strings.Repeat("a", 40000)}})), pipeline.LimitAMFString, 0},
		{"AMF key too long", encode(t, connect(amf0.Object{{Key: strings.Repeat("k", 40000), Value: 1.0}})), pipeline.LimitAMFString, 0},
		{"after lawful messages", append(encode(t, connect(amf0.Object{{Key: "app", Value: "live"}}), &message.SetChunkSize{Value: 4096}),
			encode(t, &message.SetChunkSize{Value: 1 << 30})...), pipeline.LimitRTMPChunkSize, 2},
		{"extended chunk stream id", []byte{0x00, 0x40, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0, 0}, "", 0},
		{"type 1 chunk first", []byte{0x46, 0, 0, 0, 0, 0, 4, 9, 1, 2, 3, 4}, "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var hits []string
			got, err, g := throughGuard(tc.in, testLimits, 4096, func(l string) { hits = append(hits, l) })
			if len(got) != tc.before {
				t.Errorf("the library read %d messages, want %d", len(got), tc.before)
			}
			var le *pipeline.LimitError
			if tc.limit == "" {
				if g.Err() == nil || errors.As(g.Err(), &le) {
					t.Fatalf("guard error %v, want one that is no limit", g.Err())
				}
				return
			}
			if !errors.As(err, &le) || le.Limit != tc.limit || !errors.As(g.Err(), &le) {
				t.Fatalf("library error %v, guard error %v; want a limit error for %s", err, g.Err(), tc.limit)
			}
			if len(hits) != 1 || hits[0] != tc.limit {
				t.Errorf("hits %v, want [%s]", hits, tc.limit)
			}
		})
	}
}

// TestGuardRefusesRTMPE: an encrypted handshake cannot be checked, so it
// ends at its first byte.
func TestGuardRefusesRTMPE(t *testing.T) {
	g := newGuard(struct {
		io.Reader
		io.Writer
	}{bytes.NewReader(append([]byte{6}, make([]byte, 1536)...)), io.Discard}, testLimits, nil)
	n, err := g.Read(make([]byte, 2000))
	if n != 0 || err == nil || !strings.Contains(err.Error(), "RTMPE") {
		t.Fatalf("read %d, %v; want nothing and an RTMPE error", n, err)
	}
}

// FuzzGuard: on any input the guard never panics, the library reads no
// message past the limits through it, and where the guard finds nothing
// to refuse the library reads exactly what it reads without it: the
// shadow state never drifts from the library's.
func FuzzGuard(f *testing.F) {
	f.Add(lawful(f), uint16(4096))
	f.Add(encode(f, &message.SetChunkSize{Value: 1<<31 - 1}), uint16(1))
	f.Add(encode(f, &message.CommandAMF0{ChunkStreamID: 3, Name: "connect", Arguments: []any{nestedAMF(100)}}), uint16(3))
	f.Add([]byte{0x06, 0, 0, 0, 0, 0, 0x10, 9, 1, 0, 0, 0, 1, 2, 3}, uint16(5))
	lim := guardLimits{chunkSize: 8192, messageSize: 64 << 10, amfDepth: 8, amfString: 512}
	f.Fuzz(func(t *testing.T, in []byte, step uint16) {
		if len(in) > 1<<20 {
			return
		}
		got, err, g := throughGuard(in, lim, int(step)+1, nil)
		for _, m := range got {
			if sc, ok := m.(*message.SetChunkSize); ok && (sc.Value < 128 || sc.Value > uint32(lim.chunkSize)) {
				t.Fatalf("the library read Set Chunk Size %d", sc.Value)
			}
		}
		if g.Err() != nil {
			return
		}
		want, werr := readMessages(bytes.NewReader(in))
		if !reflect.DeepEqual(got, want) || (err == nil) != (werr == nil) {
			t.Fatalf("through the guard: %d messages, %v; without: %d messages, %v", len(got), err, len(want), werr)
		}
	})
}
