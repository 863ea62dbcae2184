package mpegts

import (
	"errors"
	"io"
	"strconv"
	"strings"
)

// ISO/IEC 13818-1 §2.4.3: transport packets are 188 bytes and open with the
// sync byte 0x47.
const (
	// PacketSize is the size of a transport packet in bytes.
	PacketSize = 188
	// SyncByte is the first byte of every transport packet.
	SyncByte = 0x47
)

// Reserved PIDs (ISO/IEC 13818-1 Table 2-3).
const (
	pidPAT  = 0x0000
	pidNull = 0x1FFF
)

// errReinit records that the program tables changed (a new program, new
// elementary PIDs or stream types): the tracks must be found again from the
// packet that carries the change.
var errReinit = errors.New("program tables changed")

// PacketSource yields the transport packets of one source in arrival
// order, for a transport that delivers whole packets (UDP datagrams, SRT
// messages). A byte stream is read with NewStream instead.
type PacketSource interface {
	// Next returns the next packet; the demuxer calls it from the
	// goroutine running Demuxer.Run. The packet should be PacketSize
	// bytes; anything else is counted as a bad packet and skipped. The
	// slice is only read, and only until the next call. An error ends
	// Run, which returns it: io.EOF when the source ended normally.
	Next() ([]byte, error)
}

// tsEvents receives what the packet pre-pass notices. Every method is called
// from the demuxing goroutine.
type tsEvents interface {
	// badPacket reports a packet that was skipped: "sync" (no sync byte),
	// "tei" (transport_error_indicator set) or "malformed".
	badPacket(reason string)
	// ccError reports a continuity_counter gap on pid: packets were lost or
	// reordered, and the PES the gap falls in is damaged.
	ccError(pid uint16)
}

// tsReader sits between a PacketSource and mediacommon's mpegts.Reader.
// That reader reports no continuity errors (astits, beneath it, silently
// discards a PES whose packets skip a counter) and reads the PMT only once,
// so both are checked here, on the packets, before the reader sees them. It
// hands the demuxer one checked packet per Read, so that what it has seen is
// exactly what the demuxer has parsed: a continuity error it reports is
// known to precede every access unit the demuxer emits afterwards. It checks
// sync bytes, the transport error flag and continuity counters, and watches
// the PAT and PMTs; when they change it returns errReinit and replays the
// change (the current PAT first) to the next demuxer.
type tsReader struct {
	src PacketSource
	ev  tsEvents

	err     error    // sticky: the source's error, or errReinit until reset
	pending [][]byte // packets to hand out before reading the source
	rest    []byte   // part of a packet a short Read could not take

	cc      [8192]int8 // last continuity_counter per PID, -1 before the first
	pat     string     // signature of the PAT in force, "" before the first
	pmts    map[uint16]string
	pmtPIDs map[uint16]bool // PMT PIDs the PAT in force names
	last    []byte          // the newest valid PAT packet, replayed on a PMT change
}

func newTSReader(src PacketSource, ev tsEvents) *tsReader {
	r := &tsReader{src: src, ev: ev, pmts: map[uint16]string{}, pmtPIDs: map[uint16]bool{}}
	for i := range r.cc {
		r.cc[i] = -1
	}
	return r
}

// sourceErr returns the source's terminal error, nil while it is still
// delivering.
func (r *tsReader) sourceErr() error {
	if r.err == errReinit {
		return nil
	}
	return r.err
}

// changed reports whether the demuxer stopped because the tables changed.
func (r *tsReader) changed() bool { return r.err == errReinit }

// resume clears a pending change so a new demuxer can read on.
func (r *tsReader) resume() {
	if r.err == errReinit {
		r.err = nil
	}
}

// Read implements io.Reader for mpegts.Reader: it yields whole packets.
func (r *tsReader) Read(p []byte) (int, error) {
	if len(r.rest) > 0 {
		n := copy(p, r.rest)
		r.rest = r.rest[n:]
		return n, nil
	}
	if r.err == errReinit {
		return 0, io.EOF
	}
	if r.err != nil {
		return 0, r.err
	}
	for {
		var pkt []byte
		if len(r.pending) > 0 {
			pkt = r.pending[0]
			r.pending = r.pending[1:]
			r.learn(pkt)
		} else {
			var err error
			if pkt, err = r.src.Next(); err != nil {
				r.err = err
				return 0, err
			}
			ok, change := r.inspect(pkt)
			if change {
				// The current demuxer sees the end of its stream, so it
				// hands out the units it still holds (astits completes a
				// PES only at the next one on its PID, which may never
				// come under the new tables).
				r.reinit(pkt)
				return 0, io.EOF
			}
			if !ok {
				continue
			}
		}
		n := copy(p, pkt)
		if n < len(pkt) {
			r.rest = append(r.rest[:0], pkt[n:]...)
		}
		return n, nil
	}
}

// reinit forgets the program tables and queues the packet that changed
// them, behind the current PAT when the change is in a PMT (a demuxer only
// recognises a PMT once a PAT has named its PID).
func (r *tsReader) reinit(pkt []byte) {
	r.err = errReinit
	r.pending = r.pending[:0]
	if pid(pkt) != pidPAT && r.last != nil {
		r.pending = append(r.pending, r.last)
	}
	r.pending = append(r.pending, append([]byte(nil), pkt...))
	r.pat = ""
	clear(r.pmts)
	clear(r.pmtPIDs)
}

func pid(pkt []byte) uint16 { return uint16(pkt[1]&0x1F)<<8 | uint16(pkt[2]) }

// inspect checks one packet from the source. ok is false when the packet
// must be skipped; change is true when it carries a PAT or PMT that differs
// from the one in force.
func (r *tsReader) inspect(pkt []byte) (ok, change bool) {
	if len(pkt) != PacketSize || pkt[0] != SyncByte {
		r.ev.badPacket("sync")
		return false, false
	}
	if pkt[1]&0x80 != 0 {
		r.ev.badPacket("tei")
		return false, false
	}
	payload, discontinuity, valid := packetPayload(pkt)
	if !valid {
		r.ev.badPacket("malformed")
		return false, false
	}
	p := pid(pkt)
	if p == pidNull {
		return true, false
	}
	// §2.4.3.3: the counter increments with every packet that carries a
	// payload; one duplicate packet may be sent (same counter), and a
	// discontinuity_indicator allows any value.
	cc := int8(pkt[3] & 0x0F)
	if payload != nil {
		last := r.cc[p]
		if last >= 0 && !discontinuity && cc != last && cc != (last+1)&0x0F {
			r.ev.ccError(p)
		}
		r.cc[p] = cc
	}
	return true, r.learn(pkt)
}

// learn records the program tables a packet carries and reports whether
// they differ from the ones in force.
func (r *tsReader) learn(pkt []byte) (changed bool) {
	if pkt[1]&0x40 == 0 {
		return false // tables are only read from a section start
	}
	payload, _, valid := packetPayload(pkt)
	if !valid || payload == nil {
		return false
	}
	p := pid(pkt)
	switch {
	case p == pidPAT:
		sig, pmts, ok := parsePAT(payload)
		if !ok {
			return false
		}
		r.last = append(r.last[:0], pkt...)
		if r.pat != "" && r.pat != sig {
			return true
		}
		if r.pat == "" {
			r.pat = sig
			for _, p := range pmts {
				r.pmtPIDs[p] = true
			}
		}
	case r.pmtPIDs[p]:
		sig, ok := pmtSignature(payload)
		if !ok {
			return false
		}
		if old, seen := r.pmts[p]; seen && old != sig {
			return true
		}
		r.pmts[p] = sig
	}
	return false
}

// packetPayload returns the payload of a transport packet (nil when it has
// none) and its discontinuity_indicator; valid is false when the
// adaptation field overruns the packet (§2.4.3.4).
func packetPayload(pkt []byte) (payload []byte, discontinuity, valid bool) {
	afc := pkt[3] >> 4 & 0x03
	off := 4
	if afc&0x02 != 0 {
		l := int(pkt[4])
		if 5+l > PacketSize {
			return nil, false, false
		}
		discontinuity = l > 0 && pkt[5]&0x80 != 0
		off = 5 + l
	}
	if afc&0x01 == 0 || off >= PacketSize {
		return nil, discontinuity, true
	}
	return pkt[off:], discontinuity, true
}

// section returns the PSI section that starts in a payload unit (after the
// pointer_field, §2.4.4.2), if it is complete within the packet and its
// CRC_32 is right. Tables longer than one packet are left to the demuxer;
// they are rare, and missing one only delays noticing a change.
func section(payload []byte, tableID byte) ([]byte, bool) {
	if len(payload) < 1 {
		return nil, false
	}
	ptr := int(payload[0])
	s := payload[1:]
	if ptr >= len(s) {
		return nil, false
	}
	s = s[ptr:]
	if len(s) < 3 || s[0] != tableID {
		return nil, false
	}
	n := 3 + (int(s[1]&0x0F)<<8 | int(s[2]))
	if n > len(s) || n < 12 {
		return nil, false
	}
	s = s[:n]
	if crc32MPEG(s) != 0 {
		return nil, false
	}
	return s, true
}

// parsePAT describes a PAT (§2.4.4.3) as "program:pmt_pid ..." and lists
// its PMT PIDs.
func parsePAT(payload []byte) (sig string, pmts []uint16, ok bool) {
	s, ok := section(payload, 0x00)
	if !ok {
		return "", nil, false
	}
	var b strings.Builder
	for e := s[8 : len(s)-4]; len(e) >= 4; e = e[4:] {
		prog := int(e[0])<<8 | int(e[1])
		if prog == 0 {
			continue // network_PID
		}
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		p := uint16(e[2]&0x1F)<<8 | uint16(e[3])
		pmts = append(pmts, p)
		b.WriteString(strconv.Itoa(prog))
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(int(p)))
	}
	return b.String(), pmts, true
}

// pmtSignature describes a PMT (§2.4.4.8) by its program and the type and
// PID of each elementary stream, which is what the tracks depend on.
func pmtSignature(payload []byte) (string, bool) {
	s, ok := section(payload, 0x02)
	if !ok || len(s) < 16 {
		return "", false
	}
	var b strings.Builder
	b.WriteString(strconv.Itoa(int(s[3])<<8 | int(s[4])))
	infoLen := int(s[10]&0x0F)<<8 | int(s[11])
	if 12+infoLen > len(s)-4 {
		return "", false
	}
	for e := s[12+infoLen : len(s)-4]; len(e) >= 5; {
		esLen := int(e[3]&0x0F)<<8 | int(e[4])
		b.WriteString(" " + strconv.Itoa(int(e[0])) + "/" + strconv.Itoa(int(e[1]&0x1F)<<8|int(e[2])))
		if 5+esLen > len(e) {
			return "", false
		}
		e = e[5+esLen:]
	}
	return b.String(), true
}

// crc32MPEG computes the CRC_32 of ISO/IEC 13818-1 Annex A (polynomial
// 0x04C11DB7, MSB first, initial value all ones, no final xor). Over a whole
// section, CRC field included, it is 0.
func crc32MPEG(b []byte) uint32 {
	crc := uint32(0xFFFFFFFF)
	for _, c := range b {
		crc = crc<<8 ^ crcTable[byte(crc>>24)^c]
	}
	return crc
}

var crcTable = func() (t [256]uint32) {
	for i := range t {
		c := uint32(i) << 24
		for range 8 {
			if c&0x80000000 != 0 {
				c = c<<1 ^ 0x04C11DB7
			} else {
				c <<= 1
			}
		}
		t[i] = c
	}
	return t
}()

// streamPackets is the PacketSource over a byte stream (an HTTP request
// body): it finds packet boundaries by the sync byte, skipping (and
// reporting) bytes that do not start a packet.
type streamPackets struct {
	r    io.Reader
	ev   tsEvents
	buf  [PacketSize]byte
	have int
}

func (s *streamPackets) Next() ([]byte, error) {
	for {
		if _, err := io.ReadFull(s.r, s.buf[s.have:]); err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) {
				err = io.EOF
			}
			return nil, err
		}
		s.have = 0
		if s.buf[0] == SyncByte {
			return s.buf[:], nil
		}
		// Resynchronise at the next sync byte and read the rest after it.
		i := 1
		for i < PacketSize && s.buf[i] != SyncByte {
			i++
		}
		s.ev.badPacket("sync")
		s.have = copy(s.buf[:], s.buf[i:])
	}
}
