package mpegts

import (
	"errors"
	"io"
	"log/slog"
	"testing"

	"github.com/sluice-media/sluice/pipeline"
)

// slicePackets is a PacketSource over packets already cut, as a datagram
// transport delivers them.
type slicePackets [][]byte

func (s *slicePackets) Next() ([]byte, error) {
	if len(*s) == 0 {
		return nil, io.EOF
	}
	p := (*s)[0]
	*s = (*s)[1:]
	return p, nil
}

// TestPacketSourceMatchesStream feeds a recording to New as whole packets,
// with a runt and a foreign packet among them, and checks that it yields
// what NewStream yields from the bytes.
func TestPacketSourceMatchesStream(t *testing.T) {
	ts := fixture(t, "h264_mp3.ts", 1<<20)
	want, _ := demuxBytes(t, ts)

	var src slicePackets
	for b := ts; len(b) >= PacketSize; b = b[PacketSize:] {
		src = append(src, b[:PacketSize])
	}
	src = append(src[:3:3], append([][]byte{{SyncByte, 0x1F}, make([]byte, PacketSize)}, src[3:]...)...)
	m := NewCounters(pipeline.NewMetrics(), "live/packets")
	got := &collect{}
	if err := New(&src, got, slog.New(slog.DiscardHandler), m).Run(); !errors.Is(err, io.EOF) {
		t.Fatalf("Run ended with %v, want io.EOF", err)
	}
	if len(got.units) != len(want.units) || !got.video || !got.audio {
		t.Fatalf("%d units (video %v, audio %v), want %d", len(got.units), got.video, got.audio, len(want.units))
	}
	for i, au := range got.units {
		w := want.units[i]
		if au.DTS != w.DTS || au.PTS != w.PTS || au.Key != w.Key || string(au.Data) != string(w.Data) {
			t.Fatalf("unit %d differs: DTS %v PTS %v key %v, want %v %v %v", i, au.DTS, au.PTS, au.Key, w.DTS, w.PTS, w.Key)
		}
	}
	if n := m.badPackets["sync"].Value(); n != 2 {
		t.Fatalf("%d packets counted as out of sync, want 2", n)
	}
}

// TestBadPacketReasons checks that a transport's own reasons land in the
// same family as the demuxer's, the preset ones and any other.
func TestBadPacketReasons(t *testing.T) {
	metrics := pipeline.NewMetrics()
	m := NewCounters(metrics, "live/x")
	m.BadPacket("size")
	m.BadPacket("overflow")
	m.BadPacket("overflow")
	m.BadPacket("rtp")
	for reason, want := range map[string]uint64{"size": 1, "overflow": 2, "rtp": 1, "sync": 0} {
		if got := metrics.Counter("sluice_mpegts_bad_packets_total", "", "stream", "reason").With("live/x", reason).Value(); got != want {
			t.Errorf("reason %q: %d, want %d", reason, got, want)
		}
	}
}
