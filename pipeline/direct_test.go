package pipeline

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http/httputil"
	"strconv"
	"sync"
	"testing"
	"time"
)

// The direct tests frame units as records: kind ('U' unit, 'C' sequence
// header), the track's id (its Config byte), the unit's sequence number, the
// payload length and the payload, a prefix of pattern.
var pattern = func() []byte {
	b := make([]byte, 256<<10)
	for i := range b {
		b[i] = byte(i * 7)
	}
	return b
}()

func record(kind byte, track byte, seq uint64, data []byte) *Wire {
	h := make([]byte, 14)
	h[0], h[1] = kind, track
	binary.BigEndian.PutUint64(h[2:], seq)
	binary.BigEndian.PutUint32(h[10:], uint32(len(data)))
	return NewWire(h, data)
}

func encodeRecord(au *AccessUnit) *Wire { return record('U', au.Track.Config[0], au.seq, au.Data) }

// serveDirect is an output's write loop, as the RTMP and HTTP-FLV outputs
// have it: sequence headers before a track's first unit, one writev a
// batch, chunked framing if asked.
func serveDirect(ctx context.Context, r *Reader, conn net.Conn, chunked bool, timeout time.Duration) error {
	var framing Framing
	if chunked {
		framing = HTTPChunks{}
	}
	if !r.Direct(conn, DirectOptions{Format: WireRTMP, Encode: encodeRecord, Framing: framing, WriteTimeout: timeout}) {
		return errors.New("Direct refused")
	}
	var sent [numKinds]*Track
	var iov, all net.Buffers
	for {
		batch, err := r.Next(ctx)
		if err != nil {
			return err
		}
		iov = append(iov[:0], nil)
		size := 0
		for _, au := range batch {
			k := au.Track.Kind()
			if sent[k] != au.Track {
				w := record('C', au.Track.Config[0], 0, nil)
				iov = append(iov, w.Bufs...)
				size += w.Len
				sent[k] = au.Track
			}
			w := au.Wire(WireRTMP, encodeRecord)
			iov = append(iov, w.Bufs...)
			size += w.Len
		}
		all = iov[1:]
		if chunked {
			iov[0] = []byte(strconv.FormatInt(int64(size), 16) + "\r\n")
			iov = append(iov, []byte("\r\n"))
			all = iov
		}
		_ = conn.SetWriteDeadline(time.Now().Add(timeout))
		if _, err := all.WriteTo(conn); err != nil {
			return err
		}
	}
}

// received is what one player read.
type received struct {
	units   []uint64 // sequence numbers, in order
	headers int
	err     error
}

// readRecords parses a player's byte stream and checks every record's
// payload and that each track's units follow its sequence header.
func readRecords(conn net.Conn, chunked bool, sizeOf func(seq uint64) int) received {
	var got received
	var in io.Reader = bufio.NewReaderSize(conn, 64<<10)
	if chunked {
		in = httputil.NewChunkedReader(in)
	}
	var announced [256]bool
	h := make([]byte, 14)
	buf := make([]byte, len(pattern))
	for {
		if _, err := io.ReadFull(in, h); err != nil {
			if !errors.Is(err, io.EOF) {
				got.err = err
			}
			return got
		}
		seq, n := binary.BigEndian.Uint64(h[2:]), int(binary.BigEndian.Uint32(h[10:]))
		switch h[0] {
		case 'C':
			announced[h[1]] = true
			got.headers++
			continue
		case 'U':
		default:
			got.err = fmt.Errorf("bad record kind %q", h[0])
			return got
		}
		if _, err := io.ReadFull(in, buf[:n]); err != nil {
			got.err = err
			return got
		}
		switch {
		case !announced[h[1]]:
			got.err = fmt.Errorf("unit %d of track %d before its sequence header", seq, h[1])
		case n != sizeOf(seq) || !bytes.Equal(buf[:n], pattern[:n]):
			got.err = fmt.Errorf("unit %d: bad payload (%d bytes)", seq, n)
		}
		if got.err != nil {
			return got
		}
		got.units = append(got.units, seq)
	}
}

// loopback returns a connected pair of TCP connections on 127.0.0.1.
func loopback(t *testing.T) (server, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	return server, client
}

type player struct {
	server, client net.Conn
	reader         *Reader
	served         error
	got            received
}

// TestDirectDeliversEverything: many direct players, some with tiny socket
// buffers so that writes block and split, receive every unit exactly once
// and in order, with sequence headers before a new track's units, and then
// the end of the stream. Half of them use chunked framing. In latency mode
// the writers are kicked for every unit; in throughput mode once per merge
// window.
func TestDirectDeliversEverything(t *testing.T) {
	for _, mw := range []time.Duration{0, 5 * time.Millisecond} {
		t.Run(fmt.Sprintf("merge_window=%v", mw), func(t *testing.T) { directDeliversEverything(t, mw) })
	}
}

func directDeliversEverything(t *testing.T, mw time.Duration) {
	h := testHub(t, StreamOptions{GOPCache: 1, BufferFrames: 8192, MergeWindow: mw})
	pub, err := h.Publish("live/direct", ClientInfo{})
	if err != nil {
		t.Fatal(err)
	}
	video := &Track{Codec: CodecH264, Config: []byte{1}}
	audio := &Track{Codec: CodecAAC, Config: []byte{2}}
	sizeOf := func(seq uint64) int {
		switch {
		case seq%30 == 1:
			return 64<<10 + int(seq%7)
		case seq%3 == 0:
			return 300 + int(seq%11)
		}
		return 2000 + int(seq%13)*100
	}
	dts := time.Duration(0)
	var seq uint64
	write := func() {
		t.Helper()
		au := &AccessUnit{Track: video, DTS: dts, PTS: dts, Key: seq%30 == 1, Data: pattern[:sizeOf(seq)]}
		if seq%3 == 0 {
			au = &AccessUnit{Track: audio, DTS: dts, PTS: dts, Key: true, Data: pattern[:sizeOf(seq)]}
		}
		if err := pub.Write(au); err != nil {
			t.Fatal(err)
		}
		if au.seq != seq {
			t.Fatalf("unit got seq %d, want %d", au.seq, seq)
		}
		seq++
		dts += 10 * time.Millisecond
	}
	for range 5 {
		write()
	}

	const players = 24
	ps := make([]*player, players)
	var wg sync.WaitGroup
	for i := range ps {
		p := &player{}
		p.server, p.client = loopback(t)
		if i%4 == 0 {
			_ = p.server.(*net.TCPConn).SetWriteBuffer(32 << 10)
		}
		p.reader, err = h.Play(t.Context(), "live/direct", ClientInfo{})
		if err != nil {
			t.Fatal(err)
		}
		ps[i] = p
		chunked := i%2 == 1
		wg.Add(2)
		go func() {
			defer wg.Done()
			p.served = serveDirect(t.Context(), p.reader, p.server, chunked, 20*time.Second)
			if chunked && errors.Is(p.served, ErrStreamEnded) {
				_, _ = p.server.Write([]byte("0\r\n\r\n"))
			}
			p.server.Close()
		}()
		go func() {
			defer wg.Done()
			p.got = readRecords(p.client, chunked, sizeOf)
		}()
	}
	for i := range 1200 {
		if i == 700 {
			// A new video track (a publisher's new parameters): players
			// must get its sequence header before its first unit.
			video = &Track{Codec: CodecH264, Config: []byte{3}}
		}
		write()
		if i%4 == 0 {
			time.Sleep(200 * time.Microsecond)
		}
	}
	pub.Close()
	wg.Wait()

	var direct int64
	for i, p := range ps {
		p.reader.Close()
		p.client.Close()
		if !errors.Is(p.served, ErrStreamEnded) {
			t.Errorf("player %d: write loop ended with %v, want ErrStreamEnded", i, p.served)
		}
		if p.got.err != nil {
			t.Errorf("player %d: %v", i, p.got.err)
			continue
		}
		u := p.got.units
		if len(u) == 0 {
			t.Errorf("player %d: no units", i)
			continue
		}
		if u[len(u)-1] != seq-1 {
			t.Errorf("player %d: last unit %d, want %d", i, u[len(u)-1], seq-1)
		}
		for j := 1; j < len(u); j++ {
			if u[j] != u[j-1]+1 {
				t.Errorf("player %d: unit %d after %d", i, u[j], u[j-1])
				break
			}
		}
		if p.got.headers != 3 {
			t.Errorf("player %d: %d sequence headers, want 3", i, p.got.headers)
		}
		direct += p.reader.DirectWritten()
	}
	if direct == 0 {
		t.Error("no byte went the direct way")
	}
	t.Logf("%d of the bytes went the direct way", direct)
}

// TestDirectStalledPlayer: a player that stops reading falls back to its
// goroutine, which is cut by the write timeout, while the others keep
// getting every unit without delay.
func TestDirectStalledPlayer(t *testing.T) {
	h := testHub(t, StreamOptions{GOPCache: 1, BufferFrames: 4096})
	pub, err := h.Publish("live/stall", ClientInfo{})
	if err != nil {
		t.Fatal(err)
	}
	video := &Track{Codec: CodecH264, Config: []byte{1}}
	const size = 16 << 10
	var n uint64
	write := func() {
		if err := pub.Write(&AccessUnit{Track: video, DTS: time.Duration(n) * time.Millisecond, Key: n%50 == 0, Data: pattern[:size]}); err != nil {
			t.Fatal(err)
		}
		n++
	}
	write()
	sizeOf := func(uint64) int { return size }

	const timeout = 300 * time.Millisecond
	ps := make([]*player, 4)
	var wg sync.WaitGroup
	stalled := make(chan time.Time, 1)
	for i := range ps {
		p := &player{}
		p.server, p.client = loopback(t)
		p.reader, err = h.Play(t.Context(), "live/stall", ClientInfo{})
		if err != nil {
			t.Fatal(err)
		}
		ps[i] = p
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.served = serveDirect(t.Context(), p.reader, p.server, false, timeout)
			p.server.Close()
			if i == 0 {
				stalled <- time.Now()
			}
		}()
		if i == 0 {
			_ = p.server.(*net.TCPConn).SetWriteBuffer(16 << 10)
			_ = p.client.(*net.TCPConn).SetReadBuffer(16 << 10)
			continue // this player never reads
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.got = readRecords(p.client, false, sizeOf)
		}()
	}
	start := time.Now()
	var cut time.Time
	for cut.IsZero() && time.Since(start) < 10*time.Second {
		write()
		time.Sleep(time.Millisecond)
		select {
		case cut = <-stalled:
		default:
		}
	}
	if cut.IsZero() {
		t.Fatal("the stalled player was not cut within 10 s")
	}
	for range 100 {
		write()
	}
	pub.Close()
	wg.Wait()

	var ne net.Error
	if p := ps[0]; !errors.As(p.served, &ne) || !ne.Timeout() {
		t.Errorf("stalled player: write loop ended with %v, want a write timeout", p.served)
	}
	t.Logf("stalled player cut after %v", cut.Sub(start).Round(time.Millisecond))
	for i, p := range ps[1:] {
		p.reader.Close()
		p.client.Close()
		if !errors.Is(p.served, ErrStreamEnded) || p.got.err != nil {
			t.Errorf("player %d: served %v, read %v", i+1, p.served, p.got.err)
			continue
		}
		if got := uint64(len(p.got.units)); got != n || p.got.units[0] != 0 || p.got.units[got-1] != n-1 {
			t.Errorf("player %d: %d units, want all %d in order", i+1, got, n)
		}
	}
	ps[0].reader.Close()
	ps[0].client.Close()
}

// TestPlayLongBatch: a player that starts from a long GOP cache gets it in
// several writes (maxPlayIOV buffers at most), chunked, with every unit in
// order and no empty chunk, which would end an HTTP body, before the
// stream's end.
func TestPlayLongBatch(t *testing.T) {
	h := testHub(t, StreamOptions{GOPCache: 1, BufferFrames: 4096, MergeWindow: 20 * time.Millisecond})
	pub, err := h.Publish("live/long", ClientInfo{})
	if err != nil {
		t.Fatal(err)
	}
	track := &Track{Codec: CodecH264, Config: []byte{1}}
	const n = 700 // more than maxBatch, and many times maxPlayIOV
	sizeOf := func(uint64) int { return 100 }
	for i := range n {
		ts := time.Duration(i) * time.Millisecond
		if err := pub.Write(&AccessUnit{Track: track, DTS: ts, PTS: ts, Key: i == 0, Data: pattern[:100]}); err != nil {
			t.Fatal(err)
		}
	}
	r, err := h.Play(t.Context(), "live/long", ClientInfo{})
	if err != nil {
		t.Fatal(err)
	}
	server, client := loopback(t)
	got := make(chan received, 1)
	go func() { got <- readRecords(client, true, sizeOf) }()
	done := make(chan string, 1)
	go func() {
		done <- Play(t.Context(), server, r, PlayerOptions{
			Format: WireRTMP, Unit: encodeRecord,
			Header:       func(tr *Track) *Wire { return record('C', tr.Config[0], 0, nil) },
			Framing:      HTTPChunks{},
			End:          func() error { _, err := server.Write(HTTPLastChunk); return err },
			WriteTimeout: 5 * time.Second,
			Log:          slog.New(slog.DiscardHandler),
		})
	}()
	// Keep the stream going a little, then end it.
	for i := n; i < n+50; i++ {
		ts := time.Duration(i) * time.Millisecond
		if err := pub.Write(&AccessUnit{Track: track, DTS: ts, PTS: ts, Data: pattern[:100]}); err != nil {
			t.Fatal(err)
		}
	}
	pub.Close()
	if cause := <-done; cause != CauseStreamEnded {
		t.Errorf("play ended with %s, want %s", cause, CauseStreamEnded)
	}
	res := <-got
	if res.err != nil {
		t.Fatal(res.err)
	}
	if len(res.units) != n+50 || res.units[0] != 0 || res.units[len(res.units)-1] != n+49 {
		t.Fatalf("got %d units, want all %d from the GOP start", len(res.units), n+50)
	}
	for i, u := range res.units {
		if u != uint64(i) {
			t.Fatalf("unit %d is %d", i, u)
		}
	}
}
