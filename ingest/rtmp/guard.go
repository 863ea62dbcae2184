package rtmp

import (
	"errors"
	"fmt"
	"io"

	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/media/flv"
)

// The RTMP library reads chunks and decodes AMF with bounds of its own
// that are far too generous for a public port: it takes any Set Chunk
// Size up to 10 MiB and allocates a whole chunk before its bytes arrive,
// so that 30 bytes from a client cost the server 10 MiB for as long as
// the client holds the connection; it assembles a message on each of 62
// chunk streams at once; and it decodes AMF recursively, so a command
// nested a million deep costs gigabytes of stack. None of that can be
// configured, so the guard reads the client's bytes before the library
// does and keeps a shadow of its chunk state: the same rules (RTMP 1.0
// §5.3.1, as gortmplib v1.0.1's rawmessage.Reader applies them, its
// quirks included) on the same bytes, without the payloads. A client past
// a limit gets an error from the read that would have handed the library
// the offending byte; the library never sees it.

// handshakeSize is C0, C1 and C2 (RTMP 1.0 §5.2): the bytes before the
// first chunk.
const handshakeSize = 1 + 1536 + 1536

// guardLimits are the limits block's bounds a guard applies.
type guardLimits struct {
	chunkSize, messageSize int // rtmp_max_chunk_size, rtmp_max_message_size
	amfDepth, amfString    int
}

// guard reads a client's connection for the RTMP library (its Read), and
// writes to it as it is (its Write). It is used from the connection's
// goroutine only, as the library uses it.
type guard struct {
	r   io.Reader
	w   io.Writer
	lim guardLimits
	// hit counts a limit hit (the Gate's CountLimit).
	hit func(limit string)

	handshake int // handshake bytes still to pass
	chunkSize uint32
	streams   [64]*chunkStream
	// The chunk being read: its header bytes gathered so far, their
	// number, how many it has (0 until the first byte says), whether
	// the extended timestamp was counted in; then the body bytes left.
	hdr     [16]byte
	hn, hl  int
	extSeen bool // whether the header needs an extended timestamp is known
	body    uint32
	cur     *chunkStream
	pending int64 // declared bytes of the messages being assembled
	err     error
}

// chunkStream is what the library remembers of one chunk stream.
type chunkStream struct {
	known     bool // a type 0 chunk came: types 1 to 3 may follow
	typ       uint8
	length    uint32 // the message's length
	recv      uint32 // its bytes received so far
	hasExt    bool   // the library reads an extended timestamp in type 3 chunks
	assembled bool   // counted in guard.pending
	// body keeps a message the guard must read itself: a control
	// message (types 1, 2) or AMF (18, 20, and enhanced video metadata).
	capture bool
	body    []byte
}

func newGuard(rw io.ReadWriter, lim guardLimits, hit func(string)) *guard {
	return &guard{r: rw, w: rw, lim: lim, hit: hit, handshake: handshakeSize, chunkSize: 128}
}

func (g *guard) Write(p []byte) (int, error) { return g.w.Write(p) }

// Err returns what ended the guard's reads: a *pipeline.LimitError, a
// protocol error, or nil.
func (g *guard) Err() error { return g.err }

// Read reads from the connection and checks what it read. Bytes before an
// offending one are returned; the error comes from the next Read.
func (g *guard) Read(p []byte) (int, error) {
	if g.err != nil {
		return 0, g.err
	}
	n, err := g.r.Read(p)
	if k, ferr := g.feed(p[:n]); ferr != nil {
		g.err = ferr
		if k > 0 {
			return k, nil
		}
		return 0, ferr
	}
	return n, err
}

// Message types the guard reads (RTMP 1.0 §5.4, §7.1).
const (
	typeSetChunkSize = 1
	typeAbort        = 2
	typeVideo        = 9
	typeDataAMF0     = 18
	typeCommandAMF0  = 20
)

// feed runs the shadow state over b. On an offence it returns how many
// bytes of b precede the byte that completed the offending unit (a
// header, a message), and the error.
func (g *guard) feed(b []byte) (int, error) {
	for i := 0; i < len(b); {
		switch {
		case g.handshake > 0:
			if g.handshake == handshakeSize && b[i] == 6 {
				// C0 version 6 asks for RTMPE, whose chunks are
				// encrypted with keys only the library holds: they
				// cannot be checked, so they are not taken.
				return i, errors.New("encrypted RTMP (RTMPE, C0 version 6) is not accepted; use RTMPS")
			}
			k := min(g.handshake, len(b)-i)
			g.handshake -= k
			i += k
		case g.body > 0:
			k := int(min(g.body, uint32(len(b)-i)))
			cs := g.cur
			if cs.capture && cs.typ == typeVideo && cs.recv == 0 && (b[i]&0x80 == 0 || b[i]&0x0F != 4) {
				// Enhanced RTMP: of video, only the metadata packet
				// (IsExHeader set, PacketType 4) carries AMF.
				cs.capture = false
			}
			if cs.capture {
				cs.body = append(cs.body, b[i:i+k]...)
			}
			cs.recv += uint32(k)
			g.body -= uint32(k)
			i += k
			if g.body == 0 {
				if err := g.chunkDone(); err != nil {
					return i - 1, err
				}
			}
		default:
			g.hdr[g.hn] = b[i]
			g.hn++
			i++
			if err := g.header(); err != nil {
				return i - 1, err
			}
		}
	}
	return len(b), nil
}

// header takes in the byte just added to the chunk header, and starts the
// chunk's body once the header is whole.
func (g *guard) header() error {
	fmtType, id := g.hdr[0]>>6, g.hdr[0]&0x3F
	if g.hn == 1 {
		if id < 2 {
			return errors.New("RTMP chunk with a 2- or 3-byte basic header (chunk stream id 0 or 1), which is not supported")
		}
		g.hl, g.extSeen = [4]int{12, 8, 4, 1}[fmtType], false
		if g.streams[id] == nil {
			g.streams[id] = &chunkStream{}
		}
	}
	cs := g.streams[id]
	if g.hn == g.hl && !g.extSeen {
		// §5.3.1.3: a timestamp field of 0xFFFFFF means the real one
		// follows in 4 bytes; type 3 chunks carry it when the chunk
		// stream's last header did (as the library decides it).
		g.extSeen = true
		if fmtType < 3 && u24(g.hdr[1:4]) == 0xFFFFFF || fmtType == 3 && cs.hasExt {
			g.hl += 4
			return nil
		}
	}
	if g.hn < g.hl {
		return nil
	}
	g.hn = 0
	ts := u24(g.hdr[1:4])
	if g.hl > 1 && ts == 0xFFFFFF {
		ts = u32(g.hdr[g.hl-4 : g.hl])
	}
	switch fmtType {
	case 0, 1:
		if fmtType == 1 && !cs.known {
			return errors.New("RTMP type 1 chunk on a chunk stream without a type 0 chunk")
		}
		if cs.recv != 0 {
			return fmt.Errorf("RTMP type %d chunk in the middle of a message", fmtType)
		}
		cs.known = true
		cs.length, cs.typ = u24(g.hdr[4:7]), g.hdr[7]
		cs.hasExt = ts >= 0xFFFFFF
	case 2:
		if !cs.known || cs.recv != 0 {
			return errors.New("RTMP type 2 chunk without a message to follow")
		}
		cs.hasExt = ts >= 0xFFFFFF
	case 3:
		if cs.recv != 0 {
			// The next chunk of the message being assembled.
			g.cur, g.body = cs, min(cs.length-cs.recv, g.chunkSize)
			return nil
		}
		if !cs.known {
			return errors.New("RTMP type 3 chunk on a chunk stream without a type 0 chunk")
		}
	}
	return g.begin(cs)
}

// begin starts a message on cs, with the length and type its header
// gave.
func (g *guard) begin(cs *chunkStream) error {
	if int64(cs.length) > int64(g.lim.messageSize) {
		return g.limit(pipeline.LimitRTMPMessageSize, fmt.Sprintf("RTMP message of %d bytes announced, more than rtmp_max_message_size (%d)", cs.length, g.lim.messageSize))
	}
	g.cur, g.body = cs, min(cs.length, g.chunkSize)
	cs.body = cs.body[:0]
	cs.capture = cs.typ == typeSetChunkSize || cs.typ == typeAbort || cs.typ == typeDataAMF0 || cs.typ == typeCommandAMF0 || cs.typ == typeVideo
	if cs.length > g.chunkSize {
		// Assembled over several chunks: the library keeps what came
		// until the message is whole. Messages interleave on several
		// chunk streams, but one client needs no more than two of the
		// largest in flight.
		cs.assembled = true
		g.pending += int64(cs.length)
		if g.pending > 2*int64(g.lim.messageSize) {
			return g.limit(pipeline.LimitRTMPMessageSize, fmt.Sprintf("RTMP messages of %d bytes in all assembled at once, more than twice rtmp_max_message_size (%d)", g.pending, g.lim.messageSize))
		}
	}
	if g.body == 0 {
		return g.chunkDone()
	}
	return nil
}

// chunkDone runs when the current chunk's body is whole, and checks the
// message it completes, if it does.
func (g *guard) chunkDone() error {
	cs := g.cur
	if cs.recv < cs.length {
		return nil
	}
	if cs.assembled {
		g.pending -= int64(cs.length)
		cs.assembled = false
	}
	cs.recv = 0
	body := cs.body
	if !cs.capture {
		return nil
	}
	// Commands come at the start of a session and seldom after: the
	// buffer goes with this one, rather than sit with every player.
	cs.body = nil
	switch cs.typ {
	case typeSetChunkSize:
		if len(body) == 4 {
			v := u32(body)
			if v < 128 || int64(v) > int64(g.lim.chunkSize) {
				return g.limit(pipeline.LimitRTMPChunkSize, fmt.Sprintf("RTMP Set Chunk Size %d, outside 128 to rtmp_max_chunk_size (%d)", v, g.lim.chunkSize))
			}
			g.chunkSize = v
		}
	case typeAbort:
		if len(body) == 4 {
			if v := u32(body); v >= 2 && v <= 63 && g.streams[v] != nil && g.streams[v].recv != 0 {
				a := g.streams[v]
				if a.assembled {
					g.pending -= int64(a.length)
					a.assembled = false
				}
				// As the library's abortMessage: the message and its
				// length are forgotten.
				a.recv, a.length, a.body = 0, 0, a.body[:0]
			}
		}
	case typeDataAMF0, typeCommandAMF0:
		return g.amf(body)
	case typeVideo:
		if len(body) >= 5 {
			return g.amf(body[5:])
		}
	}
	return nil
}

// amf checks the AMF0 values of a message.
func (g *guard) amf(b []byte) error {
	err := flv.CheckAMF(b, g.lim.amfDepth, g.lim.amfString)
	var le *flv.AMFLimitError
	if !errors.As(err, &le) {
		return nil
	}
	if le.String {
		return g.limit(pipeline.LimitAMFString, "RTMP command or metadata with an "+le.Error()+" (amf_max_string)")
	}
	return g.limit(pipeline.LimitAMFDepth, "RTMP command or metadata with an "+le.Error()+" (amf_max_depth)")
}

func (g *guard) limit(limit, detail string) error {
	if g.hit != nil {
		g.hit(limit)
	}
	return &pipeline.LimitError{Limit: limit, Detail: detail}
}

func u24(b []byte) uint32 { return uint32(b[0])<<16 | uint32(b[1])<<8 | uint32(b[2]) }

func u32(b []byte) uint32 {
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

var _ io.ReadWriter = (*guard)(nil)
