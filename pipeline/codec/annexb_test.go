package codec

import (
	"bytes"
	"testing"

	"github.com/sluice-media/sluice/pipeline"
)

func TestClassifyNAL(t *testing.T) {
	h264, h265 := pipeline.CodecH264, pipeline.CodecH265
	for _, tc := range []struct {
		name  string
		codec pipeline.Codec
		nalu  []byte
		want  NALClass
	}{
		{"h264 empty", h264, nil, NALInvalid},
		{"h264 SPS", h264, []byte{0x67, 0x64}, NALSPS},
		{"h264 PPS", h264, []byte{0x68, 0xee}, NALPPS},
		{"h264 AUD", h264, []byte{0x09, 0xf0}, NALAUD},
		{"h264 IDR", h264, []byte{0x65, 0x88}, NALKeySlice},
		{"h264 non-IDR slice", h264, []byte{0x41, 0x9a}, NALSlice},
		{"h264 data partition C", h264, []byte{0x04}, NALSlice},
		{"h264 SEI", h264, []byte{0x06, 0x05}, NALOther},
		{"h264 end of stream", h264, []byte{0x0b}, NALOther},
		{"h265 one byte", h265, []byte{0x40}, NALInvalid},
		{"h265 VPS", h265, h265VPS, NALVPS},
		{"h265 SPS", h265, h265SPS, NALSPS},
		{"h265 PPS", h265, h265PPS, NALPPS},
		{"h265 AUD", h265, []byte{0x46, 0x01, 0x50}, NALAUD},
		{"h265 IDR_W_RADL", h265, []byte{0x26, 0x01}, NALKeySlice},
		{"h265 CRA", h265, []byte{0x2a, 0x01}, NALKeySlice},
		{"h265 BLA_W_LP", h265, []byte{0x20, 0x01}, NALKeySlice},
		{"h265 TRAIL_R", h265, []byte{0x02, 0x01}, NALSlice},
		{"h265 RASL_N", h265, []byte{0x10, 0x01}, NALSlice},
		{"h265 prefix SEI", h265, []byte{0x4e, 0x01}, NALOther},
		{"other codec", pipeline.CodecAAC, []byte{0x65}, NALOther},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ClassifyNAL(tc.codec, tc.nalu); got != tc.want {
				t.Fatalf("ClassifyNAL(%v, % x) = %d, want %d", tc.codec, tc.nalu, got, tc.want)
			}
		})
	}
}

func TestWithParams(t *testing.T) {
	sps, pps := []byte{0x67, 0x64, 0x00, 0x1f}, []byte{0x68, 0xee}
	idr, slice := []byte{0x65, 0x88}, []byte{0x41, 0x9a}
	sei := []byte{0x06, 0x05}
	avc := &pipeline.Track{Codec: pipeline.CodecH264, SPS: sps, PPS: pps}
	hevc := &pipeline.Track{Codec: pipeline.CodecH265, VPS: h265VPS, SPS: h265SPS, PPS: h265PPS}
	hevcIRAP := []byte{0x26, 0x01, 0xaf}
	for _, tc := range []struct {
		name  string
		track *pipeline.Track
		key   bool
		in    [][]byte
		want  [][]byte
	}{
		{"h264 keyframe gets SPS and PPS", avc, true, [][]byte{sei, idr}, [][]byte{sps, pps, sei, idr}},
		{"h264 keyframe that has them is kept", avc, true, [][]byte{sps, pps, idr}, [][]byte{sps, pps, idr}},
		{"h264 other picture is kept", avc, false, [][]byte{slice}, [][]byte{slice}},
		{"h265 keyframe gets VPS, SPS and PPS", hevc, true, [][]byte{hevcIRAP}, [][]byte{h265VPS, h265SPS, h265PPS, hevcIRAP}},
		{"h265 keyframe that has them is kept", hevc, true, [][]byte{h265VPS, h265SPS, h265PPS, hevcIRAP}, [][]byte{h265VPS, h265SPS, h265PPS, hevcIRAP}},
		{"track without SPS", &pipeline.Track{Codec: pipeline.CodecH264}, true, [][]byte{idr}, [][]byte{idr}},
		{"h265 track without VPS puts no empty unit", &pipeline.Track{Codec: pipeline.CodecH265, SPS: h265SPS, PPS: h265PPS}, true, [][]byte{hevcIRAP}, [][]byte{h265SPS, h265PPS, hevcIRAP}},
		{"not H.264 or H.265", &pipeline.Track{Codec: pipeline.CodecAV1, SPS: sps}, true, [][]byte{slice}, [][]byte{slice}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := append([][]byte(nil), tc.in...)
			got := WithParams(&pipeline.AccessUnit{Track: tc.track, Key: tc.key}, in)
			if !equalUnits(got, tc.want) {
				t.Fatalf("WithParams = % x, want % x", got, tc.want)
			}
			if !equalUnits(in, tc.in) {
				t.Fatal("WithParams modified its argument")
			}
		})
	}
}

func equalUnits(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

// avccCases are AVCC access units and the units in them; FuzzSplitAVCC
// starts from them.
var avccCases = []struct {
	name  string
	data  []byte
	units [][]byte
	ok    bool
}{
	{"empty", nil, nil, true},
	{"one unit", []byte{0, 0, 0, 2, 0x65, 0x88}, [][]byte{{0x65, 0x88}}, true},
	{"two units", []byte{0, 0, 0, 1, 0x09, 0, 0, 0, 3, 0x41, 0x9a, 0x01}, [][]byte{{0x09}, {0x41, 0x9a, 0x01}}, true},
	{"truncated length", []byte{0, 0, 1}, nil, false},
	{"length past the end", []byte{0, 0, 0, 5, 0x65}, nil, false},
	{"zero length", []byte{0, 0, 0, 0}, nil, false},
}

func TestAVCC(t *testing.T) {
	for _, tc := range avccCases {
		t.Run(tc.name, func(t *testing.T) {
			units, err := SplitAVCC(nil, tc.data)
			if (err == nil) != tc.ok {
				t.Fatalf("SplitAVCC error %v, want ok=%v", err, tc.ok)
			}
			if !tc.ok {
				return
			}
			if !equalUnits(units, tc.units) {
				t.Fatalf("SplitAVCC = % x, want % x", units, tc.units)
			}
			if got := AppendAVCC(nil, tc.units); !bytes.Equal(got, tc.data) {
				t.Fatalf("AppendAVCC = % x, want % x", got, tc.data)
			}
		})
	}
	// Empty units have no AVCC form, and dst is appended to.
	if got := AppendAVCC([]byte{0xAA}, [][]byte{nil, {0x65}, {}}); !bytes.Equal(got, []byte{0xAA, 0, 0, 0, 1, 0x65}) {
		t.Fatalf("AppendAVCC = % x", got)
	}
}

// FuzzSplitAVCC checks that whatever SplitAVCC accepts, AppendAVCC writes
// back byte for byte, and that every unit it returns is non-empty and
// classifies without panicking.
func FuzzSplitAVCC(f *testing.F) {
	for _, tc := range avccCases {
		f.Add(tc.data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		units, err := SplitAVCC(nil, data)
		if err != nil {
			return
		}
		for _, u := range units {
			if len(u) == 0 {
				t.Fatal("SplitAVCC returned an empty unit")
			}
			ClassifyNAL(pipeline.CodecH264, u)
			ClassifyNAL(pipeline.CodecH265, u)
		}
		if got := AppendAVCC(nil, units); !bytes.Equal(got, data) {
			t.Fatalf("AppendAVCC(SplitAVCC(% x)) = % x", data, got)
		}
	})
}
