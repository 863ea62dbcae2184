package main

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// TestPacedReadsDrainPeriodically has an in-test server write 512 bytes
// every 2 ms while a paced client wakes every 50 ms: the client must get
// every byte, and in far fewer reads than the server made writes, since
// each wake-up drains what piled up meanwhile. A client that is not paced
// yet (its setup) reads every write as it comes.
func TestPacedReadsDrainPeriodically(t *testing.T) {
	if !pacingSupported {
		t.Skip("no paced reads on this system")
	}
	const writes, size = 120, 512
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	served := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			served <- err
			return
		}
		defer c.Close()
		// The setup exchange: one answer to one question.
		q := make([]byte, 1)
		if _, err := io.ReadFull(c, q); err != nil {
			served <- err
			return
		}
		if _, err := c.Write([]byte("ok")); err != nil {
			served <- err
			return
		}
		buf := make([]byte, size)
		for range writes {
			if _, err := c.Write(buf); err != nil {
				served <- err
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
		served <- nil
	}()
	t.Cleanup(func() {
		if err := <-served; err != nil {
			t.Errorf("server: %v", err)
		}
	})

	nc, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	p := newPacer(50*time.Millisecond, 10*time.Millisecond)
	c := p.wrap(nc)
	if _, ok := c.(*pacedConn); !ok {
		t.Fatalf("a TCP connection was not wrapped: %T", c)
	}
	if _, err := nc.Write([]byte{'?'}); err != nil {
		t.Fatal(err)
	}
	ok := make([]byte, 2)
	if _, err := io.ReadFull(c, ok); err != nil || string(ok) != "ok" {
		t.Fatalf("setup answer %q: %v", ok, err)
	}
	p.start()
	buf := make([]byte, 64<<10)
	total, reads := 0, 0
	for {
		n, err := c.Read(buf)
		if n > 0 {
			total += n
			reads++
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if total != writes*size {
		t.Fatalf("got %d bytes, want %d", total, writes*size)
	}
	// About 6 wake-ups over the server's ~250 ms; reading as data arrives
	// would take about one read per write.
	if reads > writes/3 {
		t.Fatalf("%d reads for %d writes: the reads were not paced", reads, writes)
	}
}

// TestPacerLeavesPipesAlone checks that a connection without a socket is
// returned as it is, read as data arrives.
func TestPacerLeavesPipesAlone(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if c := newPacer(time.Second, 0).wrap(a); c != a {
		t.Fatalf("a pipe was wrapped: %T", c)
	}
}
