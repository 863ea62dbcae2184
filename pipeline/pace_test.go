package pipeline

import (
	"context"
	"net"
	"testing"
	"time"
)

// tcpPair returns the server side of a loopback TCP connection, as a
// Runtime listener hands it out, and the client side.
func tcpPair(t *testing.T) (*limitedConn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	lc := &limitedConn{TCPConn: sc.(*net.TCPConn), release: func() {}}
	t.Cleanup(func() { lc.Close() })
	return lc, client
}

// TestPacedReads: a paced publisher's connection is read in bursts a merge
// window apart, however often its client writes, and its readers are woken
// once per burst with every unit of it; in latency mode, or without a
// merge window, nothing is paced.
func TestPacedReads(t *testing.T) {
	const window = 100 * time.Millisecond
	if p, err := testHub(t, StreamOptions{}).Publish("live/l", ClientInfo{Proto: "test"}); err != nil {
		t.Fatal(err)
	} else if lc, _ := tcpPair(t); p.PaceReads(lc) {
		t.Error("a stream without a merge window paced its publisher")
	}

	h := testHub(t, StreamOptions{MergeWindow: window})
	p, err := h.Publish("live/t", ClientInfo{Proto: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	lc, client := tcpPair(t)
	if !p.PaceReads(lc) {
		t.Fatal("PaceReads refused a TCP connection of a throughput-mode stream")
	}
	r := p.Stream().Subscribe(ClientInfo{Proto: "test"})
	defer r.Close()

	// The client writes a byte every 5 ms for 1 s; each byte read is
	// published as a unit.
	const n = 200
	go func() {
		for i := range n {
			if _, err := client.Write([]byte{byte(i)}); err != nil {
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	batches := make(chan int, n)
	go func() {
		defer close(batches)
		for got := 0; got < n; {
			b, err := r.Next(context.Background())
			if err != nil {
				return
			}
			got += len(b)
			batches <- len(b)
		}
	}()
	reads := 0
	buf := make([]byte, 64)
	for got := 0; got < n; {
		k, err := lc.Read(buf)
		if err != nil {
			t.Fatalf("read after %d bytes: %v", got, err)
		}
		reads++
		for _, b := range buf[:k] {
			if int(b) != got%256 {
				t.Fatalf("byte %d is %d", got, b)
			}
			ts := time.Duration(got) * time.Millisecond
			if err := p.Write(&AccessUnit{Track: testVideo, DTS: ts, PTS: ts, Key: true, Data: []byte{b}}); err != nil {
				t.Fatal(err)
			}
			got++
		}
	}
	// The last burst ends when the socket is found empty.
	client.Close()
	if _, err := lc.Read(buf); err == nil {
		t.Error("a read after the client closed returned no error")
	}
	units, wakes := 0, 0
	for b := range batches {
		units += b
		wakes++
	}
	// About ten bursts; read as they came, it would be 200 reads.
	if reads > n/4 {
		t.Errorf("%d reads for %d writes 5 ms apart, want bursts about %v apart", reads, n, window)
	}
	if units != n {
		t.Errorf("the reader got %d units, want %d", units, n)
	}
	if wakes > reads+1 {
		t.Errorf("the reader was woken %d times for %d bursts", wakes, reads)
	}
}
