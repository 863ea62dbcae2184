package forward_test

import (
	"time"

	"github.com/sluice-media/sluice/pipeline"
)

// testAudio is an AAC track (AudioSpecificConfig: AAC-LC, 48 kHz, stereo).
var testAudio = &pipeline.Track{Codec: pipeline.CodecAAC, Config: []byte{0x11, 0x90}, SampleRate: 48000, Channels: 2}

// audioUnit returns an AAC unit at dts; audio units make a stream ready
// on their own when the publisher expects no video.
func audioUnit(dts time.Duration) *pipeline.AccessUnit {
	return &pipeline.AccessUnit{Track: testAudio, DTS: dts, PTS: dts, Key: true, Data: []byte{0x21, 0x10, 0x04}}
}
