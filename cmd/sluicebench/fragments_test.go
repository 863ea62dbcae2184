package main

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4/seekablebuffer"
	"github.com/google/go-cmp/cmp"
)

// marshalPart encodes p as gohlslib's muxer does (mediacommon's writer).
func marshalPart(t testing.TB, p fmp4.Part) []byte {
	t.Helper()
	var buf seekablebuffer.Buffer
	if err := p.Marshal(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// fragmentCases are movie fragments as the library that writes HLS parts
// encodes them, with the samples readFragments must find.
func fragmentCases(t testing.TB) []struct {
	name string
	in   []byte
	want []fragSample
} {
	video := &fmp4.PartTrack{ID: 1, BaseTime: 900000, Samples: []*fmp4.Sample{
		{Duration: 3000, PTSOffset: 6000, Payload: []byte{1, 2, 3}},
		{Duration: 3000, PTSOffset: 12000, IsNonSyncSample: true, Payload: []byte{4}},
		{Duration: 3000, IsNonSyncSample: true, Payload: []byte{5, 6}},
	}}
	audio := &fmp4.PartTrack{ID: 2, BaseTime: 480000, Samples: []*fmp4.Sample{
		{Duration: 1024, Payload: []byte{7}},
		{Duration: 1024, Payload: []byte{8}},
	}}
	keyOnly := &fmp4.PartTrack{ID: 1, BaseTime: 5, Samples: []*fmp4.Sample{{Duration: 10, Payload: []byte{9}}}}
	av := marshalPart(t, fmp4.Part{SequenceNumber: 7, Tracks: []*fmp4.PartTrack{video, audio}})
	one := marshalPart(t, fmp4.Part{SequenceNumber: 8, Tracks: []*fmp4.PartTrack{keyOnly}})
	return []struct {
		name string
		in   []byte
		want []fragSample
	}{
		{"video and audio", av, []fragSample{
			{track: 1, dts: 900000, cts: 6000, key: true},
			{track: 1, dts: 903000, cts: 12000},
			{track: 1, dts: 906000},
			{track: 2, dts: 480000, key: true},
			{track: 2, dts: 481024, key: true},
		}},
		// A segment is its parts one after the other.
		{"two fragments", append(append([]byte(nil), one...), one...), []fragSample{
			{track: 1, dts: 5, key: true},
			{track: 1, dts: 5, key: true},
		}},
		{"empty", nil, nil},
	}
}

func TestReadFragments(t *testing.T) {
	for _, tc := range fragmentCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			var got []fragSample
			if err := readFragments(tc.in, func(s fragSample) { got = append(got, s) }); err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tc.want, got, cmp.AllowUnexported(fragSample{})); d != "" {
				t.Fatalf("samples (-want +got):\n%s", d)
			}
		})
	}
}

// TestReadFragmentsRejectsTruncation cuts a part at every length: each cut
// inside a box is a *ParseError, never a panic or a sample read past the
// end. (The cut between moof and mdat leaves a whole box, which reads.)
func TestReadFragmentsRejectsTruncation(t *testing.T) {
	in := fragmentCases(t)[0].in
	moofLen := int(binary.BigEndian.Uint32(in))
	for n := 1; n < len(in); n++ {
		err := readFragments(in[:n], func(fragSample) {})
		var pe *ParseError
		if n == moofLen {
			if err != nil {
				t.Fatalf("the moof alone: %v", err)
			}
			continue
		}
		if err == nil || !errors.As(err, &pe) {
			t.Fatalf("cut at %d of %d: %v, want a *ParseError", n, len(in), err)
		}
	}
}

// FuzzFragments checks that any input is read without a panic, and that
// no more samples come out than the input could describe (a trun entry
// takes at least 4 bytes unless tfhd gives defaults, and the count of
// such runs is bounded).
func FuzzFragments(f *testing.F) {
	for _, tc := range fragmentCases(f) {
		f.Add(tc.in)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		n := 0
		_ = readFragments(in, func(fragSample) { n++ })
		if n > (len(in)/8+1)<<16 {
			t.Fatalf("%d samples from %d bytes", n, len(in))
		}
	})
}
