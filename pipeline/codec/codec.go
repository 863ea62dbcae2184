// Package codec builds pipeline.Tracks from codec configuration records and
// parameter sets, and recognizes keyframes, for every ingest. It wraps
// mediacommon and go-mp4 so that ingests agree on what a track holds.
package codec

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/abema/go-mp4"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/av1"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h265"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg1audio"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/opus"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/vp9"

	"github.com/sluice-media/sluice/pipeline"
)

// H264 builds an H.264 track from an AVCDecoderConfigurationRecord (ISO/IEC
// 14496-15 §5.3.3), as the FLV/RTMP sequence header carries it.
func H264(avcC []byte) (*pipeline.Track, error) {
	var rec mp4.AVCDecoderConfiguration
	rec.SetType(mp4.BoxTypeAvcC())
	if _, err := mp4.Unmarshal(bytes.NewReader(avcC), uint64(len(avcC)), &rec, mp4.Context{}); err != nil {
		return nil, fmt.Errorf("H264 configuration record: %w", err)
	}
	if len(rec.SequenceParameterSets) == 0 || len(rec.PictureParameterSets) == 0 {
		return nil, errors.New("H264 configuration record has no SPS or no PPS")
	}
	t := &pipeline.Track{
		Codec:  pipeline.CodecH264,
		Config: bytes.Clone(avcC),
		SPS:    bytes.Clone(rec.SequenceParameterSets[0].NALUnit),
		PPS:    bytes.Clone(rec.PictureParameterSets[0].NALUnit),
	}
	var sps h264.SPS
	if err := sps.Unmarshal(t.SPS); err == nil {
		t.Width, t.Height = sps.Width(), sps.Height()
	}
	return t, nil
}

// H264FromParams builds an H.264 track from an SPS and a PPS found in the
// bitstream (MPEG-TS), writing the configuration record FLV and MP4 need.
func H264FromParams(spsNALU, ppsNALU []byte) (*pipeline.Track, error) {
	if len(spsNALU) < 4 || len(ppsNALU) < 1 {
		return nil, errors.New("H264 SPS or PPS too short")
	}
	var sps h264.SPS
	if err := sps.Unmarshal(spsNALU); err != nil {
		return nil, fmt.Errorf("H264 SPS: %w", err)
	}
	// ISO/IEC 14496-15 §5.3.3.1: version, profile, compatibility, level,
	// 6 reserved bits + lengthSizeMinusOne (3: 4-byte lengths), 3 reserved
	// bits + SPS count, then each set with a 16-bit length.
	rec := []byte{1, spsNALU[1], spsNALU[2], spsNALU[3], 0xFF, 0xE1}
	rec = binary.BigEndian.AppendUint16(rec, uint16(len(spsNALU)))
	rec = append(rec, spsNALU...)
	rec = append(rec, 1)
	rec = binary.BigEndian.AppendUint16(rec, uint16(len(ppsNALU)))
	rec = append(rec, ppsNALU...)
	return &pipeline.Track{
		Codec:  pipeline.CodecH264,
		Config: rec,
		SPS:    bytes.Clone(spsNALU),
		PPS:    bytes.Clone(ppsNALU),
		Width:  sps.Width(),
		Height: sps.Height(),
	}, nil
}

// H265 builds an H.265 track from an HEVCDecoderConfigurationRecord (ISO/IEC
// 14496-15 §8.3.3).
func H265(hvcC []byte) (*pipeline.Track, error) {
	var rec mp4.HvcC
	if _, err := mp4.Unmarshal(bytes.NewReader(hvcC), uint64(len(hvcC)), &rec, mp4.Context{}); err != nil {
		return nil, fmt.Errorf("H265 configuration record: %w", err)
	}
	t := &pipeline.Track{Codec: pipeline.CodecH265, Config: bytes.Clone(hvcC)}
	for _, arr := range rec.NaluArrays {
		if len(arr.Nalus) == 0 {
			continue
		}
		n := bytes.Clone(arr.Nalus[0].NALUnit)
		switch h265.NALUType(arr.NaluType) {
		case h265.NALUType_VPS_NUT:
			t.VPS = n
		case h265.NALUType_SPS_NUT:
			t.SPS = n
		case h265.NALUType_PPS_NUT:
			t.PPS = n
		}
	}
	if t.VPS == nil || t.SPS == nil || t.PPS == nil {
		return nil, errors.New("H265 configuration record lacks a VPS, SPS or PPS")
	}
	var sps h265.SPS
	if err := sps.Unmarshal(t.SPS); err == nil {
		t.Width, t.Height = sps.Width(), sps.Height()
	}
	return t, nil
}

// AV1 builds an AV1 track from an AV1CodecConfigurationRecord (av1C).
func AV1(av1C []byte) (*pipeline.Track, error) {
	if len(av1C) < 4 || av1C[0]&0x7F != 1 {
		return nil, errors.New("AV1 configuration record is malformed")
	}
	t := &pipeline.Track{Codec: pipeline.CodecAV1, Config: bytes.Clone(av1C)}
	var bs av1.Bitstream
	if len(av1C) > 4 && bs.Unmarshal(av1C[4:]) == nil {
		for _, obu := range bs {
			var h av1.OBUHeader
			if h.Unmarshal(obu) == nil && h.Type == av1.OBUTypeSequenceHeader {
				var sh av1.SequenceHeader
				if sh.Unmarshal(obu) == nil {
					t.Width, t.Height = sh.Width(), sh.Height()
				}
			}
		}
	}
	return t, nil
}

// VP9 builds a VP9 track from a VP codec configuration record (vpcC payload).
func VP9(vpcC []byte) (*pipeline.Track, error) {
	if len(vpcC) < 8 {
		return nil, errors.New("VP9 configuration record is too short")
	}
	return &pipeline.Track{Codec: pipeline.CodecVP9, Config: bytes.Clone(vpcC)}, nil
}

// AAC builds an AAC track from an AudioSpecificConfig (ISO/IEC 14496-3
// §1.6.2.1).
func AAC(asc []byte) (*pipeline.Track, error) {
	var c mpeg4audio.AudioSpecificConfig
	if err := c.Unmarshal(asc); err != nil {
		return nil, fmt.Errorf("AAC AudioSpecificConfig: %w", err)
	}
	ch := int(c.ChannelConfig)
	if ch == 7 {
		ch = 8
	}
	return &pipeline.Track{Codec: pipeline.CodecAAC, Config: bytes.Clone(asc), SampleRate: c.SampleRate, Channels: ch}, nil
}

// Opus builds an Opus track from an OpusHead identification header (RFC 7845
// §5.1).
func Opus(head []byte) (*pipeline.Track, error) {
	var h opus.IDHeader
	if err := h.Unmarshal(head); err != nil {
		return nil, fmt.Errorf("OpusHead: %w", err)
	}
	return &pipeline.Track{Codec: pipeline.CodecOpus, Config: bytes.Clone(head), SampleRate: 48000, Channels: int(h.ChannelCount)}, nil
}

// MP3 builds an MP3 track from the header of its first frame.
func MP3(frame []byte) (*pipeline.Track, error) {
	var h mpeg1audio.FrameHeader
	if err := h.Unmarshal(frame); err != nil {
		return nil, fmt.Errorf("MP3 frame header: %w", err)
	}
	ch := 2
	if h.ChannelMode == mpeg1audio.ChannelModeMono {
		ch = 1
	}
	return &pipeline.Track{Codec: pipeline.CodecMP3, SampleRate: h.SampleRate, Channels: ch}, nil
}

// SplitAVCC returns the NAL units of an AVCC-framed access unit (4-byte
// lengths), appending to dst. The units alias data.
func SplitAVCC(dst [][]byte, data []byte) ([][]byte, error) {
	for len(data) > 0 {
		if len(data) < 4 {
			return dst, errors.New("AVCC: truncated length prefix")
		}
		n := binary.BigEndian.Uint32(data)
		data = data[4:]
		if n == 0 || uint64(n) > uint64(len(data)) {
			return dst, fmt.Errorf("AVCC: NAL unit length %d exceeds the %d bytes left", n, len(data))
		}
		dst = append(dst, data[:n])
		data = data[n:]
	}
	return dst, nil
}

// IsKey reports whether a unit of codec c with payload data (in the form
// AccessUnit.Data documents) starts a GOP. Enhanced RTMP's coded-frame
// messages carry no reliable keyframe flag, so ingests ask the bitstream.
func IsKey(c pipeline.Codec, data []byte) bool {
	switch c {
	case pipeline.CodecH264:
		nalus, err := SplitAVCC(nil, data)
		return err == nil && h264.IsRandomAccess(nalus)
	case pipeline.CodecH265:
		nalus, err := SplitAVCC(nil, data)
		return err == nil && len(nalus) > 0 && h265.IsRandomAccess(nalus)
	case pipeline.CodecAV1:
		var bs av1.Bitstream
		if bs.Unmarshal(data) != nil {
			return false
		}
		return av1.IsRandomAccess2(bs)
	case pipeline.CodecVP9:
		return vp9.IsRandomAccess(data)
	}
	return c.IsAudio()
}
