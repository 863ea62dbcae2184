package codec

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h265"

	"github.com/sluice-media/sluice/pipeline"
)

// H265FromParams builds an H.265 track from a VPS, SPS and PPS found in the
// bitstream (MPEG-TS), writing the HEVCDecoderConfigurationRecord FLV and
// MP4 need (ISO/IEC 14496-15 §8.3.3.1).
func H265FromParams(vps, sps, pps []byte) (*pipeline.Track, error) {
	if len(vps) < 2 || len(sps) < 2 || len(pps) < 2 {
		return nil, errors.New("H265 VPS, SPS or PPS too short")
	}
	if len(vps) > 0xFFFF || len(sps) > 0xFFFF || len(pps) > 0xFFFF {
		return nil, errors.New("H265 VPS, SPS or PPS too long")
	}
	var s h265.SPS
	if err := s.Unmarshal(sps); err != nil {
		return nil, fmt.Errorf("H265 SPS: %w", err)
	}
	// H.265 §7.3.2.2: after the 2-byte NAL header, one byte of IDs and
	// sub-layer count, then the 12 bytes of general profile_tier_level that
	// the record repeats verbatim (once emulation prevention is removed).
	rbsp := h264.EmulationPreventionRemove(sps[2:])
	if len(rbsp) < 13 {
		return nil, errors.New("H265 SPS too short for profile_tier_level")
	}
	rec := make([]byte, 0, 23+15+len(vps)+len(sps)+len(pps))
	rec = append(rec, 1) // configurationVersion
	rec = append(rec, rbsp[1:13]...)
	rec = append(rec,
		0xF0, 0x00, // reserved, min_spatial_segmentation_idc 0
		0xFC,                                   // reserved, parallelismType 0 (unknown)
		0xFC|byte(s.ChromaFormatIdc&0x03),      // reserved, chromaFormat
		0xF8|byte(s.BitDepthLumaMinus8&0x07),   // reserved, bitDepthLumaMinus8
		0xF8|byte(s.BitDepthChromaMinus8&0x07), // reserved, bitDepthChromaMinus8
		0x00, 0x00,                             // avgFrameRate unknown
	)
	// constantFrameRate 0, numTemporalLayers, temporalIdNested,
	// lengthSizeMinusOne 3 (4-byte lengths, as AccessUnit.Data uses).
	b := (s.MaxSubLayersMinus1+1)&0x07<<3 | 0x03
	if s.TemporalIDNestingFlag {
		b |= 0x04
	}
	rec = append(rec, b, 3) // numOfArrays
	for _, a := range []struct {
		typ  byte
		nalu []byte
	}{{byte(h265.NALUType_VPS_NUT), vps}, {byte(h265.NALUType_SPS_NUT), sps}, {byte(h265.NALUType_PPS_NUT), pps}} {
		rec = append(rec, 0x80|a.typ) // array_completeness 1: every set is here
		rec = binary.BigEndian.AppendUint16(rec, 1)
		rec = binary.BigEndian.AppendUint16(rec, uint16(len(a.nalu)))
		rec = append(rec, a.nalu...)
	}
	return H265(rec)
}
