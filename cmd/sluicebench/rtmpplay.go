package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/bluenviron/gortmplib/pkg/amf0"
	"github.com/bluenviron/gortmplib/pkg/handshake"
)

// setupTimeout bounds the handshake and the connect/createStream/play
// exchange of one player.
const setupTimeout = 15 * time.Second

// rtmpTarget is where an RTMP player connects and what it asks for.
type rtmpTarget struct {
	addr   string // host:port
	app    string // the connect command's app, query included
	tcURL  string
	stream string // the play command's stream name, query included
}

// parseRTMPURL splits rtmp://host[:port]/app/name[?query] the way
// encoders and players do: the first path segment is the application, the
// rest is the stream name, and the query travels with the stream name.
func parseRTMPURL(u *url.URL) (rtmpTarget, error) {
	if u.Scheme != "rtmp" {
		return rtmpTarget{}, fmt.Errorf("%s: only rtmp:// is supported", u.Redacted())
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "1935")
	}
	app, name, ok := strings.Cut(strings.TrimPrefix(u.Path, "/"), "/")
	if !ok || app == "" || name == "" {
		return rtmpTarget{}, fmt.Errorf("%s: want rtmp://host/app/name", u.Redacted())
	}
	if u.RawQuery != "" {
		name += "?" + u.RawQuery
	}
	return rtmpTarget{addr: host, app: app, tcURL: "rtmp://" + u.Host + "/" + app, stream: name}, nil
}

// rtmpPlayer is the lean RTMP play client: its own handshake and three
// commands, then chunk headers only.
type rtmpPlayer struct {
	p        *player
	target   rtmpTarget
	buf      []byte
	out      []byte
	pace     *pacer // nil: read as data arrives
	streamID uint32
}

// command encodes an AMF0 command message (RTMP 1.0 §7.1.1) on chunk
// stream 3 with the default 128-byte chunk size (this client never changes
// its outgoing chunk size).
func (r *rtmpPlayer) command(msid uint32, args ...any) ([]byte, error) {
	body, err := amf0.Data(args).Marshal()
	if err != nil {
		return nil, err
	}
	return appendMessage(r.out[:0], 3, msgCommandAMF0, msid, 0, body, 128), nil
}

// run plays until ctx ends or the connection fails.
func (r *rtmpPlayer) run(ctx context.Context) error {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", r.target.addr)
	if err != nil {
		return err
	}
	defer nc.Close()
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	defer stop()
	_ = nc.SetDeadline(time.Now().Add(setupTimeout))
	if _, _, err := handshake.DoClient(nc, false, false); err != nil {
		return fmt.Errorf("handshake: %w", err)
	}
	// RTMP 1.0 §7.2.1.1: the connect command's object; the codec masks
	// say "everything" so servers do not filter.
	out, err := r.command(0, "connect", 1.0, amf0.Object{
		{Key: "app", Value: r.target.app},
		{Key: "flashVer", Value: "LNX 9,0,124,2"},
		{Key: "tcUrl", Value: r.target.tcURL},
		{Key: "fpad", Value: false},
		{Key: "capabilities", Value: 15.0},
		{Key: "audioCodecs", Value: 4071.0},
		{Key: "videoCodecs", Value: 252.0},
		{Key: "videoFunction", Value: 1.0},
		{Key: "objectEncoding", Value: 0.0},
	})
	if err != nil {
		return err
	}
	if _, err := nc.Write(out); err != nil {
		return err
	}
	// Only reads are paced; acknowledgements and pongs go out at once.
	var rd net.Conn = nc
	if r.pace != nil {
		rd = r.pace.wrap(nc)
	}
	cr := newChunkReader(rd, r.buf, 64<<10)
	const (
		waitConnect = iota
		waitCreateStream
		waitPlay
		playing
	)
	state := waitConnect
	var window, acked uint64
	for {
		m, err := cr.Next()
		if err != nil {
			return err
		}
		r.p.bytes.Store(cr.Consumed())
		switch m.Type {
		case msgVideo:
			r.p.onVideo(classifyVideo(m.head()), m.Timestamp, m.Length)
		case msgAudio:
			r.p.audio.Add(1)
		case msgWindowAckSize:
			if len(m.Body) >= 4 {
				window = uint64(binary.BigEndian.Uint32(m.Body))
			}
		case msgUserControl:
			// §7.1.7: event 6 is a ping the client must answer with event 7
			// and the same timestamp; event 1 is the end of the stream.
			if len(m.Body) >= 6 && binary.BigEndian.Uint16(m.Body) == 6 {
				pong := append([]byte{0, 7}, m.Body[2:6]...)
				if _, err := nc.Write(appendMessage(r.out[:0], 2, msgUserControl, 0, 0, pong, 128)); err != nil {
					return err
				}
			}
			if len(m.Body) >= 2 && binary.BigEndian.Uint16(m.Body) == 1 && state == playing {
				return errStreamEOF
			}
		case msgCommandAMF0:
			next, err := r.onCommand(m.Body, state)
			if err != nil {
				return err
			}
			if next == state {
				break
			}
			state = next
			switch state {
			case waitCreateStream:
				out, err = r.command(0, "createStream", 2.0, nil)
			case waitPlay:
				// §7.1.7 SetBufferLength (event 3) for stream 1, 1000 ms,
				// then play on the stream createStream returned.
				out = appendMessage(r.out[:0], 2, msgUserControl, 0, 0, []byte{0, 3, 0, 0, 0, byte(r.streamID), 0, 0, 0x03, 0xe8}, 128)
				var play []byte
				play, err = amf0.Data{"play", 3.0, nil, r.target.stream, -2.0}.Marshal()
				out = appendMessage(out, 8, msgCommandAMF0, r.streamID, 0, play, 128)
			case playing:
				_ = nc.SetDeadline(time.Time{})
				if r.pace != nil {
					r.pace.start()
				}
				r.p.playing.Store(true)
				out = nil
			}
			if err != nil {
				return err
			}
			if len(out) > 0 {
				if _, err := nc.Write(out); err != nil {
					return err
				}
			}
		}
		// §5.4.3: acknowledge every window of bytes received, as a real
		// player does; some servers stop sending without it.
		if window > 0 && cr.Consumed()-acked >= window {
			acked = cr.Consumed()
			ack := binary.BigEndian.AppendUint32(nil, uint32(acked))
			if _, err := nc.Write(appendMessage(r.out[:0], 2, msgAck, 0, 0, ack, 128)); err != nil {
				return err
			}
		}
	}
}

var errStreamEOF = errors.New("server sent StreamEOF")

// onCommand advances the setup on the answers to connect (_result with
// transaction 1), createStream (_result with transaction 2) and play
// (onStatus NetStream.Play.Start), and fails on _error or an error status.
func (r *rtmpPlayer) onCommand(body []byte, state int) (int, error) {
	d, err := amf0.Unmarshal(body)
	if err != nil || len(d) < 2 {
		return state, fmt.Errorf("bad AMF0 command: %v", err)
	}
	name, _ := d[0].(string)
	id, _ := d[1].(float64)
	switch {
	case name == "_error":
		return state, fmt.Errorf("command %v refused: %s", id, statusText(d))
	case name == "_result" && id == 1 && state == 0:
		return 1, nil
	case name == "_result" && id == 2 && state == 1:
		if len(d) >= 4 {
			if sid, ok := d[3].(float64); ok {
				r.streamID = uint32(sid)
			}
		}
		return 2, nil
	case name == "onStatus":
		code := statusField(d, "code")
		switch {
		case statusField(d, "level") == "error":
			return state, fmt.Errorf("play refused: %s", statusText(d))
		case code == "NetStream.Play.Start" && state == 2:
			return 3, nil
		case code == "NetStream.Play.UnpublishNotify" || code == "NetStream.Play.Stop":
			if state == 3 {
				return state, errors.New("server sent " + code)
			}
		}
	}
	return state, nil
}

// statusField returns a string field of the info object of an onStatus or
// _error command (the fourth value).
func statusField(d amf0.Data, key string) string {
	if len(d) < 4 {
		return ""
	}
	var v any
	switch o := d[3].(type) {
	case amf0.Object:
		v, _ = o.Get(key)
	case amf0.ECMAArray:
		for _, e := range o {
			if e.Key == key {
				v = e.Value
			}
		}
	}
	s, _ := v.(string)
	return s
}

func statusText(d amf0.Data) string {
	if c, desc := statusField(d, "code"), statusField(d, "description"); c != "" || desc != "" {
		return strings.TrimSpace(c + " " + desc)
	}
	return fmt.Sprint(d)
}
