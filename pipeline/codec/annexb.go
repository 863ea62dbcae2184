package codec

import (
	"encoding/binary"
	"slices"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h265"

	"github.com/sluice-media/sluice/pipeline"
)

// NALClass is what one H.264 or H.265 NAL unit is to a track: a parameter
// set the track keeps, a delimiter nothing needs, or part of the picture.
type NALClass uint8

// The classes ClassifyNAL returns.
const (
	// NALInvalid is a unit too short for its NAL header; drop it.
	NALInvalid NALClass = iota
	// NALOther is a non-picture unit that stays with the picture (SEI,
	// end of sequence, filler, reserved types).
	NALOther
	// NALVPS is an H.265 video parameter set.
	NALVPS
	// NALSPS is a sequence parameter set.
	NALSPS
	// NALPPS is a picture parameter set.
	NALPPS
	// NALAUD is an access unit delimiter, which AVCC framing has no use
	// for: each sample is one access unit already.
	NALAUD
	// NALSlice is a slice of a picture that may refer to earlier ones.
	NALSlice
	// NALKeySlice is a slice of a random-access picture: IDR for H.264,
	// IRAP (BLA, IDR, CRA) for H.265, where decoding can start.
	NALKeySlice
)

// ClassifyNAL classifies one NAL unit (no start code, no length prefix) of
// an H.264 or H.265 access unit, from the nal_unit_type in its header
// (H.264 §7.3.1 and Table 7-1; H.265 §7.3.1.2 and Table 7-1). For any other
// codec it returns NALOther.
func ClassifyNAL(c pipeline.Codec, nalu []byte) NALClass {
	switch c {
	case pipeline.CodecH264:
		if len(nalu) < 1 {
			return NALInvalid
		}
		switch t := h264.NALUType(nalu[0] & 0x1F); {
		case t == h264.NALUTypeSPS:
			return NALSPS
		case t == h264.NALUTypePPS:
			return NALPPS
		case t == h264.NALUTypeAccessUnitDelimiter:
			return NALAUD
		case t == h264.NALUTypeIDR:
			return NALKeySlice
		case t >= h264.NALUTypeNonIDR && t <= h264.NALUTypeDataPartitionC:
			return NALSlice
		}
	case pipeline.CodecH265:
		if len(nalu) < 2 {
			return NALInvalid
		}
		switch t := h265.NALUType(nalu[0] >> 1 & 0x3F); {
		case t == h265.NALUType_VPS_NUT:
			return NALVPS
		case t == h265.NALUType_SPS_NUT:
			return NALSPS
		case t == h265.NALUType_PPS_NUT:
			return NALPPS
		case t == h265.NALUType_AUD_NUT:
			return NALAUD
		case t >= h265.NALUType_BLA_W_LP && t <= h265.NALUType_RSV_IRAP_VCL23: // §7.4.2.2
			return NALKeySlice
		case t < h265.NALUType_VPS_NUT: // 0-31 are VCL units
			return NALSlice
		}
	}
	return NALOther
}

// WithParams returns nalus, the NAL units of au, with au's track's
// parameter sets in front when au is a keyframe: SPS and PPS for H.264,
// VPS, SPS and PPS for H.265. RTMP, FLV and MP4 carry them out of band, in
// the configuration record (ISO/IEC 14496-15 §5.3.3, §8.3.3); an Annex-B
// stream (MPEG-TS, HLS) carries them in band, so that a decoder joining at
// any keyframe can start. nalus is returned as it is for any other unit,
// when it already has an SPS, when the track has none, or for another
// codec; otherwise the result is a new slice and nalus is not modified.
func WithParams(au *pipeline.AccessUnit, nalus [][]byte) [][]byte {
	t := au.Track
	if !au.Key || len(t.SPS) == 0 {
		return nalus
	}
	var sets [][]byte
	switch t.Codec {
	case pipeline.CodecH264:
		sets = [][]byte{t.SPS, t.PPS}
	case pipeline.CodecH265:
		sets = [][]byte{t.VPS, t.SPS, t.PPS}
	default:
		return nalus
	}
	for _, n := range nalus {
		if ClassifyNAL(t.Codec, n) == NALSPS {
			return nalus
		}
	}
	out := make([][]byte, 0, len(sets)+len(nalus))
	for _, s := range sets {
		if len(s) > 0 {
			out = append(out, s)
		}
	}
	return append(out, nalus...)
}

// AppendAVCC appends nalus to dst in AVCC form, each unit behind a 4-byte
// big-endian length (the ISO/IEC 14496-15 sample format with
// lengthSizeMinusOne 3), the form AccessUnit.Data holds for H.264 and
// H.265. It is the inverse of
// SplitAVCC; empty units are left out, since a zero length is not a unit.
func AppendAVCC(dst []byte, nalus [][]byte) []byte {
	n := 0
	for _, u := range nalus {
		if len(u) > 0 {
			n += 4 + len(u)
		}
	}
	dst = slices.Grow(dst, n)
	for _, u := range nalus {
		if len(u) > 0 {
			dst = binary.BigEndian.AppendUint32(dst, uint32(len(u)))
			dst = append(dst, u...)
		}
	}
	return dst
}
