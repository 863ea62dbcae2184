package stagetest

import (
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// openSockets returns the inodes of the sockets this process has open, read
// from /proc/self/fd: a socket descriptor links to "socket:[INODE]". The
// set is the process's own, so servers that other processes (or other test
// binaries) run in the same network namespace do not count.
func openSockets(t testing.TB) map[string]bool {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("stagetest: list the process's file descriptors: %v", err)
	}
	set := map[string]bool{}
	for _, e := range ents {
		l, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil {
			continue // closed since the directory was read
		}
		if ino, ok := strings.CutPrefix(l, "socket:["); ok {
			set[strings.TrimSuffix(ino, "]")] = true
		}
	}
	return set
}

// newSockets describes the sockets open now that were not in before, as
// "tcp 127.0.0.1:40123 listening" where /proc/self/net knows them.
func newSockets(t testing.TB, before map[string]bool) []string {
	t.Helper()
	var inodes []string
	for ino := range openSockets(t) {
		if !before[ino] {
			inodes = append(inodes, ino)
		}
	}
	if len(inodes) == 0 {
		return nil
	}
	known := socketTable()
	out := make([]string, 0, len(inodes))
	for _, ino := range inodes {
		if d, ok := known[ino]; ok {
			out = append(out, d)
		} else {
			out = append(out, "socket inode "+ino+" (not TCP or UDP)")
		}
	}
	sort.Strings(out)
	return out
}

// tcpStates names the states of /proc/net/tcp (include/net/tcp_states.h).
var tcpStates = map[string]string{
	"01": "established", "02": "syn-sent", "03": "syn-recv", "04": "fin-wait1",
	"05": "fin-wait2", "06": "time-wait", "07": "close", "08": "close-wait",
	"09": "last-ack", "0A": "listening", "0B": "closing",
}

// socketTable maps socket inodes to a description, from the kernel's TCP
// and UDP tables of this process's network namespace (proc(5)).
func socketTable() map[string]string {
	out := map[string]string{}
	for _, proto := range []string{"tcp", "tcp6", "udp", "udp6"} {
		b, err := os.ReadFile("/proc/self/net/" + proto)
		if err != nil {
			continue
		}
		lines := strings.Split(string(b), "\n")
		for _, line := range lines[1:] {
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
			f := strings.Fields(line)
			if len(f) < 10 {
				continue
			}
			state := tcpStates[f[3]]
			if strings.HasPrefix(proto, "udp") {
				state = "bound"
			}
			out[f[9]] = fmt.Sprintf("%s %s %s", proto, procAddr(f[1]), state)
		}
	}
	return out
}

// procAddr decodes a /proc/net address, "0100007F:9C4B": the IP as 32-bit
// words in host byte order (little-endian here), the port in hex.
func procAddr(s string) string {
	ipHex, portHex, ok := strings.Cut(s, ":")
	raw, err := hex.DecodeString(ipHex)
	port, perr := strconv.ParseUint(portHex, 16, 16)
	if !ok || err != nil || perr != nil || len(raw)%4 != 0 {
		return s
	}
	for i := 0; i < len(raw); i += 4 {
		raw[i], raw[i+1], raw[i+2], raw[i+3] = raw[i+3], raw[i+2], raw[i+1], raw[i]
	}
	ip, ok := netip.AddrFromSlice(raw)
	if !ok {
		return s
	}
	return netip.AddrPortFrom(ip.Unmap(), uint16(port)).String()
}
