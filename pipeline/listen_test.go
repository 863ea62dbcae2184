package pipeline

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"
)

func acceptOne(t *testing.T, ln net.Listener) net.Conn {
	t.Helper()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() { c, err := ln.Accept(); ch <- res{c, err} }()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("accept: %v", r.err)
		}
		return r.c
	case <-time.After(5 * time.Second):
		t.Fatal("no connection accepted within 5 s")
		return nil
	}
}

// TestListenHandover is a reload's socket handover: the replacement's view
// takes every new connection, a connection queued for the old view moves
// to the new one when the old closes, and the port closes with the last
// view only.
func TestListenHandover(t *testing.T) {
	rt := NewRuntime(slog.New(slog.DiscardHandler), nil)
	// A fixed port (not 0) is shared; find a free one.
	probe, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := probe.Addr().String()
	probe.Close()

	old, err := rt.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c1, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	acceptOne(t, old).Close()

	// The replacement binds the same address: no EADDRINUSE.
	nw, err := rt.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("second listen on %s: %v", addr, err)
	}
	c2, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	got := acceptOne(t, nw)
	if got.RemoteAddr().String() != c2.LocalAddr().String() {
		t.Errorf("the new view accepted %v, want %v", got.RemoteAddr(), c2.LocalAddr())
	}
	got.Close()

	// The old view retires: its Accept ends, the socket stays.
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := old.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("accept on a closed view = %v, want net.ErrClosed", err)
	}
	c3, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial after the old view closed: %v", err)
	}
	defer c3.Close()
	acceptOne(t, nw).Close()

	// The last view closes the port.
	nw.Close()
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatal("the port still accepts after the last view closed")
	}
	// And it can be bound again.
	again, err := rt.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen after close: %v", err)
	}
	again.Close()
}

// TestListenQueuedMoves checks that a connection delivered to a view that
// closes before accepting it is handed to the newer view, not dropped.
func TestListenQueuedMoves(t *testing.T) {
	rt := NewRuntime(slog.New(slog.DiscardHandler), nil)
	probe, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := probe.Addr().String()
	probe.Close()
	old, err := rt.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Wait until the socket has queued the connection for old.
	v := old.(*view)
	deadline := time.Now().Add(5 * time.Second)
	for len(v.ch) == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	nw, err := rt.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nw.Close()
	old.Close()
	got := acceptOne(t, nw)
	defer got.Close()
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	got.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(got, b); err != nil || b[0] != 'x' {
		t.Fatalf("the moved connection does not carry the client's bytes: %v", err)
	}
}
