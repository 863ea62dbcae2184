package main

import (
	"encoding/binary"
	"fmt"
)

// fragSample is one sample of a movie fragment's track run, as much of it
// as a player's accounting needs.
type fragSample struct {
	track uint32
	dts   uint64 // in the track's timescale
	cts   int32  // composition offset: pts = dts + cts
	key   bool   // a sync sample
}

// Box types (ISO/IEC 14496-12 §8.8: movie fragments).
const (
	boxMoof = 0x6d6f6f66 // moof
	boxTraf = 0x74726166 // traf
	boxTfhd = 0x74666864 // tfhd
	boxTfdt = 0x74666474 // tfdt
	boxTrun = 0x7472756e // trun
)

// readFragments calls fn for every sample of every movie fragment in b (an
// HLS fMP4 part or segment: one or more moof+mdat pairs), in decoding
// order, without touching the media data. It reads the headers only, the
// way readers here skip payloads: a part costs a few hundred bytes of
// parsing however large it is. Malformed input is a *ParseError.
func readFragments(b []byte, fn func(fragSample)) error {
	off := 0
	for len(b) > 0 {
		typ, body, rest, err := nextBox(b, off)
		if err != nil {
			return err
		}
		if typ == boxMoof {
			if err := readMoof(body, off+len(b)-len(rest)-len(body), fn); err != nil {
				return err
			}
		}
		off += len(b) - len(rest)
		b = rest
	}
	return nil
}

// nextBox splits the box at the start of b (§4.2: a 32-bit size, or 1 and
// a 64-bit size after the type; 0 means "to the end") from what follows.
// off is b's offset in the input, for errors.
func nextBox(b []byte, off int) (typ uint32, body, rest []byte, err error) {
	if len(b) < 8 {
		return 0, nil, nil, &ParseError{Offset: uint64(off), Reason: fmt.Sprintf("%d bytes left, a box header needs 8", len(b))}
	}
	size := uint64(binary.BigEndian.Uint32(b))
	typ = binary.BigEndian.Uint32(b[4:])
	hdr := uint64(8)
	switch size {
	case 0:
		size = uint64(len(b))
	case 1:
		if len(b) < 16 {
			return 0, nil, nil, &ParseError{Offset: uint64(off), Reason: "truncated 64-bit box size"}
		}
		size, hdr = binary.BigEndian.Uint64(b[8:]), 16
	}
	if size < hdr || size > uint64(len(b)) {
		return 0, nil, nil, &ParseError{Offset: uint64(off), Reason: fmt.Sprintf("box size %d with %d bytes left", size, len(b))}
	}
	return typ, b[hdr:size], b[size:], nil
}

// readMoof reads the track fragments of a moof body at offset off.
func readMoof(b []byte, off int, fn func(fragSample)) error {
	for len(b) > 0 {
		typ, body, rest, err := nextBox(b, off)
		if err != nil {
			return err
		}
		if typ == boxTraf {
			if err := readTraf(body, off+len(b)-len(rest)-len(body), fn); err != nil {
				return err
			}
		}
		off += len(b) - len(rest)
		b = rest
	}
	return nil
}

// Flags of tfhd (§8.8.7) and trun (§8.8.8), and the sample flags bit that
// marks a non-sync sample (§8.8.3.1, sample_is_non_sync_sample).
const (
	tfhdBaseDataOffset    = 0x01
	tfhdSampleDescription = 0x02
	tfhdDefaultDuration   = 0x08
	tfhdDefaultSize       = 0x10
	tfhdDefaultFlags      = 0x20

	trunDataOffset       = 0x001
	trunFirstSampleFlags = 0x004
	trunDuration         = 0x100
	trunSize             = 0x200
	trunFlags            = 0x400
	trunCTS              = 0x800

	sampleNonSync = 1 << 16
)

// readTraf reads one track fragment: tfhd gives the track and defaults,
// tfdt the first decoding time, each trun its samples.
func readTraf(b []byte, off int, fn func(fragSample)) error {
	var (
		track            uint32
		dts              uint64
		defDur, defFlags uint32
		sawTfhd          bool
	)
	bad := func(reason string) error { return &ParseError{Offset: uint64(off), Reason: reason} }
	for len(b) > 0 {
		typ, body, rest, err := nextBox(b, off)
		if err != nil {
			return err
		}
		switch typ {
		case boxTfhd:
			if len(body) < 8 {
				return bad("short tfhd")
			}
			flags := binary.BigEndian.Uint32(body) & 0xffffff
			track, sawTfhd = binary.BigEndian.Uint32(body[4:]), true
			p := 8
			for _, f := range []struct {
				bit  uint32
				n    int
				into *uint32
			}{
				{tfhdBaseDataOffset, 8, nil},
				{tfhdSampleDescription, 4, nil},
				{tfhdDefaultDuration, 4, &defDur},
				{tfhdDefaultSize, 4, nil},
				{tfhdDefaultFlags, 4, &defFlags},
			} {
				if flags&f.bit == 0 {
					continue
				}
				if len(body) < p+f.n {
					return bad("short tfhd")
				}
				if f.into != nil {
					*f.into = binary.BigEndian.Uint32(body[p:])
				}
				p += f.n
			}
		case boxTfdt:
			switch {
			case len(body) >= 12 && body[0] == 1:
				dts = binary.BigEndian.Uint64(body[4:])
			case len(body) >= 8 && body[0] == 0:
				dts = uint64(binary.BigEndian.Uint32(body[4:]))
			default:
				return bad("bad tfdt")
			}
		case boxTrun:
			if !sawTfhd {
				return bad("trun before tfhd")
			}
			var err error
			if dts, err = readTrun(body, track, dts, defDur, defFlags, fn); err != nil {
				return bad(err.Error())
			}
		}
		off += len(b) - len(rest)
		b = rest
	}
	return nil
}

// readTrun reads one track run starting at decoding time dts and returns
// the decoding time after its last sample.
func readTrun(b []byte, track uint32, dts uint64, defDur, defFlags uint32, fn func(fragSample)) (uint64, error) {
	if len(b) < 8 {
		return dts, fmt.Errorf("short trun")
	}
	flags := binary.BigEndian.Uint32(b) & 0xffffff
	count := uint64(binary.BigEndian.Uint32(b[4:]))
	p := 8
	if flags&trunDataOffset != 0 {
		p += 4
	}
	first, haveFirst := uint32(0), false
	if flags&trunFirstSampleFlags != 0 {
		if len(b) < p+4 {
			return dts, fmt.Errorf("short trun")
		}
		first, haveFirst = binary.BigEndian.Uint32(b[p:]), true
		p += 4
	}
	entry := 0
	for _, bit := range []uint32{trunDuration, trunSize, trunFlags, trunCTS} {
		if flags&bit != 0 {
			entry += 4
		}
	}
	// A part holds a fraction of a second of samples; a count far beyond
	// that is garbage even when no per-sample field makes it take space.
	const maxSamples = 1 << 16
	if p > len(b) || count > maxSamples || uint64(len(b)-p) < count*uint64(entry) {
		return dts, fmt.Errorf("trun of %d samples in %d bytes", count, len(b))
	}
	for i := range int(count) {
		s := fragSample{track: track, dts: dts}
		dur, sflags := defDur, defFlags
		if i == 0 && haveFirst {
			sflags = first
		}
		if flags&trunDuration != 0 {
			dur = binary.BigEndian.Uint32(b[p:])
			p += 4
		}
		if flags&trunSize != 0 {
			p += 4
		}
		if flags&trunFlags != 0 {
			sflags = binary.BigEndian.Uint32(b[p:])
			p += 4
		}
		if flags&trunCTS != 0 {
			// Version 0 stores an unsigned offset, version 1 a signed one;
			// real offsets fit either reading of the 32 bits.
			s.cts = int32(binary.BigEndian.Uint32(b[p:]))
			p += 4
		}
		s.key = sflags&sampleNonSync == 0
		fn(s)
		dts += uint64(dur)
	}
	return dts, nil
}
