package httpflv_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-media/sluice/outputs/httpflv"
	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/sluicetest"
	"github.com/sluice-media/sluice/pipeline/sluicetest/feed"
)

// BenchmarkOriginPerStream measures what an origin spends to serve an
// edge's pulls over HTTP/1.1 (a connection per stream) and over cleartext
// HTTP/2 (every stream on one connection): CPU time of the origin process
// per stream-second and the bytes the transport adds to the FLV body.
//
// The origin runs here, fed with 20 synthetic streams; the edge is another
// process (this test binary again, see runPuller), so that the CPU counted
// (getrusage of this process) is the origin's alone. One op is 50 ms of
// playing all 20 streams, one stream-second; proto=none is the same origin
// with no player, whose CPU (the publishers, the runtime) the others
// include. ns/op is wall time and says nothing. Run it for a fixed time
// (200x is 10 s per case):
//
//	go test -run '^$' -bench OriginPerStream -benchtime 200x -count 3 ./outputs/httpflv/
func BenchmarkOriginPerStream(b *testing.B) {
	const streams = 20
	for _, rate := range []struct {
		name       string
		videoBytes int // per frame at 15 fps
	}{
		{"600k", 4500},
		{"2M", 16000},
	} {
		for _, proto := range []string{"none", "HTTP/1.1", "h2c"} {
			b.Run(fmt.Sprintf("rate=%s/proto=%s", rate.name, proto), func(b *testing.B) {
				k := pipeline.NewKinds()
				httpflv.Register(k)
				srv := sluicetest.Start(b, k, `
server {
  http = "127.0.0.1:0"
  api  = ""
}
pipeline "live" {
  match = ["live/*"]
  output "http_flv" {}
}
`)
				paths := make([]string, streams)
				urls := make([]string, streams)
				for i := range paths {
					paths[i] = fmt.Sprintf("live/s%02d", i)
					urls[i] = "http://" + srv.Addr("server.http") + "/" + paths[i] + ".flv"
				}
				feed.Run(b, srv.Graph.Gate, paths, feed.Options{VideoBytes: rate.videoBytes})
				var edge *puller
				if proto != "none" {
					edge = startPuller(b, proto, urls)
				}
				time.Sleep(500 * time.Millisecond) // past the GOP cache bursts
				if edge != nil {
					edge.mark()
				}
				cpu0, start := cpuTime(), time.Now()
				for b.Loop() {
					time.Sleep(time.Second / streams)
				}
				cpu := cpuTime() - cpu0
				streamSeconds := time.Since(start).Seconds() * streams
				b.ReportMetric(float64(cpu.Microseconds())/streamSeconds, "cpu-µs/stream-s")
				if edge != nil {
					wire, body := edge.result()
					b.ReportMetric(float64(body)/streamSeconds, "body-B/stream-s")
					b.ReportMetric(float64(wire-body)/streamSeconds, "framing-B/stream-s")
					b.ReportMetric(100*float64(wire-body)/float64(body), "framing-%")
					b.ReportMetric(float64(edge.conns), "conns")
				}
			})
		}
	}
}

// cpuTime returns the user and system CPU time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// pullerEnv names the environment variable that makes the test binary an
// edge for BenchmarkOriginPerStream (see runPuller).
const pullerEnv = "SLUICE_HTTPFLV_BENCH_PULLER"

// puller is the edge process of the benchmark.
type puller struct {
	cmd   *exec.Cmd
	in    io.WriteCloser
	out   *bufio.Scanner
	conns int
}

// pullerReport is what the edge prints: bytes read from its TCP
// connections and FLV body bytes, since the mark, and the connections it
// made.
type pullerReport struct {
	Wire, Body int64
	Conns      int
}

func startPuller(b *testing.B, proto string, urls []string) *puller {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), pullerEnv+"="+proto+" "+strings.Join(urls, " "))
	in, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	p := &puller{cmd: cmd, in: in, out: bufio.NewScanner(stdout)}
	b.Cleanup(func() {
		in.Close()
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	if !p.out.Scan() || p.out.Text() != "playing" {
		b.Fatalf("the edge process did not start playing: %q", p.out.Text())
	}
	return p
}

// mark tells the edge to count from now.
func (p *puller) mark() { fmt.Fprintln(p.in, "mark") }

// result stops the edge and returns what it counted since the mark.
func (p *puller) result() (wire, body int64) {
	p.in.Close()
	var r pullerReport
	if p.out.Scan() {
		_ = json.Unmarshal(p.out.Bytes(), &r)
	}
	_ = p.cmd.Wait()
	p.conns = r.Conns
	return r.Wire, r.Body
}

// countingConn counts the bytes read from a connection.
type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// countingWriter counts the body bytes.
type countingWriter struct{ n *atomic.Int64 }

func (w countingWriter) Write(p []byte) (int, error) {
	w.n.Add(int64(len(p)))
	return len(p), nil
}

// runPuller is the edge process: it plays every URL in spec ("PROTO URL
// ...") with one transport, prints "playing" once every body has started,
// counts from a "mark" line on stdin, and prints a pullerReport when stdin
// closes.
func runPuller(spec string) int {
	fields := strings.Fields(spec)
	proto, urls := fields[0], fields[1:]
	var wire, body atomic.Int64
	var conns atomic.Int64
	dialer := &net.Dialer{}
	var protos http.Protocols
	if proto == "h2c" {
		protos.SetUnencryptedHTTP2(true)
	} else {
		protos.SetHTTP1(true)
	}
	tr := &http.Transport{
		Protocols: &protos,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			conns.Add(1)
			return countingConn{c, &wire}, nil
		},
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	started := make(chan error, len(urls))
	for i, u := range urls {
		play := func() {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
			resp, err := tr.RoundTrip(req)
			if err == nil && resp.StatusCode != http.StatusOK {
				err = fmt.Errorf("%s: %s", u, resp.Status)
			}
			started <- err
			if err != nil {
				return
			}
			defer resp.Body.Close()
			_, _ = io.Copy(countingWriter{&body}, resp.Body)
		}
		if i == 0 {
			// The first request makes the connection that HTTP/2 requests
			// share: a burst would race dials (see H2CTransport).
			wg.Go(play)
			if err := <-started; err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			continue
		}
		wg.Go(play)
	}
	for range urls[1:] {
		if err := <-started; err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	fmt.Println("playing")
	in := bufio.NewScanner(os.Stdin)
	var w0, b0 int64
	for in.Scan() {
		if in.Text() == "mark" {
			w0, b0 = wire.Load(), body.Load()
		}
	}
	out, _ := json.Marshal(pullerReport{Wire: wire.Load() - w0, Body: body.Load() - b0, Conns: int(conns.Load())})
	fmt.Println(string(out))
	cancel()
	wg.Wait()
	tr.CloseIdleConnections()
	return 0
}
