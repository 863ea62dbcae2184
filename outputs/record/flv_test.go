package record

import (
	"bytes"
	"encoding/binary"
	"math"
	"testing"

	"github.com/bluenviron/gortmplib/pkg/amf0"

	"github.com/sluice-media/sluice/pipeline"
)

func mustMarshal(t testing.TB, d amf0.Data) []byte {
	t.Helper()
	b, err := d.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func metadataCases(t testing.TB) []struct {
	name string
	body []byte
} {
	return []struct {
		name string
		body []byte
	}{
		{"ffmpeg", mustMarshal(t, amf0.Data{"onMetaData", amf0.ECMAArray{
			{Key: "duration", Value: float64(0)}, {Key: "width", Value: float64(320)}, {Key: "height", Value: float64(180)},
			{Key: "videocodecid", Value: float64(7)}, {Key: "audiocodecid", Value: float64(10)}, {Key: "filesize", Value: float64(0)},
			{Key: "encoder", Value: "Lavf59.27.100"}, {Key: "stereo", Value: true}}})},
		{"object form", mustMarshal(t, amf0.Data{"onMetaData", amf0.Object{{Key: "framerate", Value: float64(30)}}})},
		{"duration as a string", mustMarshal(t, amf0.Data{"onMetaData", amf0.ECMAArray{{Key: "duration", Value: "long"}, {Key: "x", Value: nil}}})},
		{"nested", mustMarshal(t, amf0.Data{"onMetaData", amf0.ECMAArray{{Key: "tags", Value: amf0.Object{{Key: "duration", Value: float64(9)}}}}})},
		{"not AMF", []byte{0xFF, 0x00, 0x01}},
		{"empty", nil},
	}
}

// checkFileMetadata verifies what fileMetadata promises: the body parses,
// duration and filesize are numbers at the offsets it returned, and the
// publisher's other top-level entries follow unchanged.
func checkFileMetadata(t *testing.T, pubBody []byte) {
	tracks := [2]*pipeline.Track{{Codec: pipeline.CodecH264, Width: 320, Height: 180}, {Codec: pipeline.CodecAAC, SampleRate: 48000, Channels: 2}}
	body, durOff, sizeOff, err := fileMetadata(&pipeline.Metadata{Body: pubBody}, tracks)
	if err != nil {
		t.Fatalf("fileMetadata: %v", err)
	}
	// What close does: overwrite both numbers in place.
	binary.BigEndian.PutUint64(body[durOff:], math.Float64bits(12.5))
	binary.BigEndian.PutUint64(body[sizeOff:], math.Float64bits(4096))
	data, err := amf0.Unmarshal(body)
	if err != nil {
		t.Fatalf("the file's onMetaData does not parse: %v", err)
	}
	if len(data) != 2 || data[0] != "onMetaData" {
		t.Fatalf("onMetaData = %v", data)
	}
	arr, ok := data[1].(amf0.ECMAArray)
	if !ok {
		t.Fatalf("onMetaData value is %T, want an ECMA array", data[1])
	}
	obj := amf0.Object(arr)
	if d, _ := obj.GetFloat64("duration"); d != 12.5 {
		t.Fatalf("duration = %v after the fix-up", d)
	}
	if s, _ := obj.GetFloat64("filesize"); s != 4096 {
		t.Fatalf("filesize = %v after the fix-up", s)
	}
	// The publisher's entries when they re-encode, else the tracks'.
	// Compared encoded, where NaN equals NaN.
	enc := func(e amf0.ECMAArray) []byte { b, _ := amf0.Data{e}.Marshal(); return b }
	got := enc(arr[2:])
	pub, _ := publisherEntries(&pipeline.Metadata{Body: pubBody})
	if !bytes.Equal(got, enc(pub)) && !bytes.Equal(got, enc(trackEntries(tracks))) {
		t.Fatalf("entries after duration and filesize: %#v\npublisher's: %#v", arr[2:], pub)
	}
}

func TestFileMetadata(t *testing.T) {
	for _, tc := range metadataCases(t) {
		t.Run(tc.name, func(t *testing.T) { checkFileMetadata(t, tc.body) })
	}
}

func FuzzFileMetadata(f *testing.F) {
	for _, tc := range metadataCases(f) {
		f.Add(tc.body)
	}
	f.Fuzz(func(t *testing.T, body []byte) { checkFileMetadata(t, body) })
}
