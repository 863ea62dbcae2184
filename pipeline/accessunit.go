package pipeline

import (
	"sync/atomic"
	"time"
)

// AccessUnit is one frame of one track: a picture or a block of audio samples.
// The publisher fills it and hands it to Publisher.Write; from then on it is
// immutable and shared by every reader, which is why it carries no per-reader
// state.
type AccessUnit struct {
	// Track is the track the unit belongs to, with the codec parameters in
	// force for it.
	Track *Track

	// DTS and PTS are the decode and presentation times on the stream's
	// timeline. Ingests pass their own timestamps; Publisher.Write moves them
	// onto the stream timeline, which starts at 0 and stays monotonic across
	// publisher reconnects.
	DTS, PTS time.Duration

	// Key marks a video unit that starts a GOP (an IDR picture), or any audio
	// unit: audio can be joined anywhere.
	Key bool

	// Data is the payload. For H.264 and H.265 it is the NAL units in AVCC
	// form (each prefixed by a 4-byte big-endian length), as RTMP, FLV and MP4
	// carry them; for AV1 the temporal unit's OBUs; for VP9 the frame; for audio
	// one raw frame (AAC without ADTS, one Opus packet, one MP3 frame).
	Data []byte

	seq  uint64
	wire [numWireFormats]atomic.Pointer[Wire]
}

// Seq returns the unit's position in its stream's sequence: consecutive units
// have consecutive numbers, within one stream.
func (au *AccessUnit) Seq() uint64 { return au.seq }

// WireFormat names a serialization of access units that outputs share.
type WireFormat uint8

// The wire formats the built-in outputs produce. Each format's encoding is
// defined by the package that writes it; the core only caches the result.
const (
	// WireFLV is an FLV tag: tag header, body, PreviousTagSize (HTTP-FLV,
	// FLV recording).
	WireFLV WireFormat = iota
	// WireRTMP is one RTMP message as chunks with fmt 0 headers, valid for
	// every player of the stream (RTMP play, relays).
	WireRTMP
	numWireFormats
)

// Wire is an access unit (or sequence header) serialized for one wire format:
// header bytes interleaved with references into the unit's payload, laid out
// for writev. It is shared by every reader of the format, so it must never be
// modified.
type Wire struct {
	// Bufs are the pieces to write, in order.
	Bufs [][]byte
	// Len is the total length of Bufs.
	Len int
}

// NewWire returns a Wire over bufs with Len filled in.
func NewWire(bufs ...[]byte) *Wire {
	w := &Wire{Bufs: bufs}
	for _, b := range bufs {
		w.Len += len(b)
	}
	return w
}

// Wire returns the unit serialized in format f. The first caller encodes it
// with encode; every later caller, on any goroutine, gets the same *Wire. Two
// readers racing on the first call may both encode, and one result wins; that
// costs a little work once and keeps the common path a single atomic load.
// encode must be a pure function of the unit.
func (au *AccessUnit) Wire(f WireFormat, encode func(*AccessUnit) *Wire) *Wire {
	return cached(&au.wire[f], func() *Wire { return encode(au) })
}

func cached(p *atomic.Pointer[Wire], encode func() *Wire) *Wire {
	if w := p.Load(); w != nil {
		return w
	}
	w := encode()
	if p.CompareAndSwap(nil, w) {
		return w
	}
	return p.Load()
}
