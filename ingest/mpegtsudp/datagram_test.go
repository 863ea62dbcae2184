package mpegtsudp

import (
	"bytes"
	"testing"

	"github.com/sluice-media/sluice/ingest/mpegts"
)

// datagramCases are datagrams and the transport packets tsPayload finds in
// them; FuzzTSPayload starts from them.
var datagramCases = func() []struct {
	name  string
	dgram []byte
	want  []byte // nil: refused
} {
	pkt := append([]byte{mpegts.SyncByte, 0x1F, 0xFF, 0x10}, bytes.Repeat([]byte{0xFF}, mpegts.PacketSize-4)...)
	seven := bytes.Repeat(pkt, 7)
	rtp := []byte{0x80, 33, 0, 1, 0, 0, 0, 0, 1, 2, 3, 4}
	cat := func(bs ...[]byte) []byte { return bytes.Join(bs, nil) }
	return []struct {
		name  string
		dgram []byte
		want  []byte
	}{
		{"bare packets", seven, seven},
		{"one packet", pkt, pkt},
		{"empty", nil, nil},
		{"a packet and a bit", cat(pkt, []byte{0x47}), nil},
		{"no sync byte", bytes.Repeat([]byte{0xDE}, mpegts.PacketSize), nil},
		{"RTP", cat(rtp, seven), seven},
		{"RTP with a CSRC", cat([]byte{0x81, 33, 0, 1, 0, 0, 0, 0, 1, 2, 3, 4, 9, 9, 9, 9}, pkt), pkt},
		{"RTP with an extension", cat([]byte{0x90, 33, 0, 1, 0, 0, 0, 0, 1, 2, 3, 4, 0xBE, 0xDE, 0, 1, 7, 7, 7, 7}, pkt), pkt},
		{"RTP with padding", cat([]byte{0xA0, 33, 0, 1, 0, 0, 0, 0, 1, 2, 3, 4}, pkt, []byte{0, 0, 3}), pkt},
		{"RTP with bad padding", cat([]byte{0xA0, 33, 0, 1, 0, 0, 0, 0, 1, 2, 3, 4}, pkt, []byte{0}), nil},
		{"RTP without packets", rtp, nil},
		{"RTP version 1", cat([]byte{0x40, 33, 0, 1, 0, 0, 0, 0, 1, 2, 3, 4}, pkt), nil},
	}
}()

func TestTSPayload(t *testing.T) {
	for _, tc := range datagramCases {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := tsPayload(tc.dgram)
			if ok != (tc.want != nil) || !bytes.Equal(got, tc.want) {
				t.Fatalf("tsPayload = %d bytes, %v; want %d bytes", len(got), ok, len(tc.want))
			}
		})
	}
}

// FuzzTSPayload checks that whatever tsPayload accepts is a non-empty run
// of whole packets that ends the datagram, as the read loop assumes.
func FuzzTSPayload(f *testing.F) {
	for _, tc := range datagramCases {
		f.Add(tc.dgram)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		ts, ok := tsPayload(b)
		if !ok {
			return
		}
		if len(ts) == 0 || len(ts)%mpegts.PacketSize != 0 || ts[0] != mpegts.SyncByte {
			t.Fatalf("tsPayload accepted %d bytes not made of packets", len(ts))
		}
		if !bytes.Contains(b, ts) {
			t.Fatal("tsPayload returned bytes that are not in the datagram")
		}
	})
}
