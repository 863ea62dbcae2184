package pipeline

import "sync/atomic"

// Metadata is the publisher's description of its stream: the body of the FLV
// script tag ("onMetaData" and its ECMA array) that RTMP and FLV publishers
// send. It is kept encoded, because every output that resends it (RTMP play,
// HTTP-FLV, FLV recording) wants exactly these bytes.
type Metadata struct {
	// Body is the script data: AMF0 "onMetaData" followed by the values.
	Body []byte
	// HasVideo and HasAudio say which tracks the publisher announced, so
	// that the stream is not declared ready before they have arrived.
	HasVideo, HasAudio bool

	wire [numWireFormats]atomic.Pointer[Wire]
}

// Wire returns the metadata in wire format f, encoded once (see
// AccessUnit.Wire).
func (m *Metadata) Wire(f WireFormat, encode func(*Metadata) *Wire) *Wire {
	return cached(&m.wire[f], func() *Wire { return encode(m) })
}
