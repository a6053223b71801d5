// One locked OS thread per connection doing blocking read(2)/write(2) on the raw fd:
// thread-per-connection in Go, bypassing the runtime's netpoller.
//
// A thread returning from a blocking read needs a P (one of GOMAXPROCS scheduling slots) to
// run Go code again. GOMAXPROCS defaults to the CPUs in the affinity mask, often 1, so the
// returning thread waited for the runtime's monitor to hand it a slot, 20 us to 10 ms later
// (golang/go#29734): that measured the monitor, not the design. So the server keeps
// GOMAXPROCS above the number of connections, as a C thread per connection needs no slot; a
// GOMAXPROCS environment variable still wins.
package main

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"
)

const usage = "usage: go-blocking -p PORT [-a ADDRESS]"

// parseArgs accepts `-p PORT [-a ADDRESS]`: PORT a decimal in 1..65535, ADDRESS an IPv4
// address (default 127.0.0.1). A bad ADDRESS is named; anything else wrong gets the usage.
func parseArgs(args []string) netip.AddrPort {
	address, port := netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint64(0)
	for ; len(args) >= 2; args = args[2:] {
		var err error
		switch args[0] {
		case "-p":
			if port, err = strconv.ParseUint(args[1], 10, 16); err != nil || port == 0 {
				fail(2, usage)
			}
		case "-a":
			if address, err = netip.ParseAddr(args[1]); err != nil || !address.Is4() {
				fail(2, "go-blocking: -a "+args[1]+" is not an IPv4 address")
			}
		default:
			fail(2, usage)
		}
	}
	if len(args) != 0 || port == 0 {
		fail(2, usage)
	}
	return netip.AddrPortFrom(address, uint16(port))
}

func fail(status int, message string) {
	fmt.Fprintln(os.Stderr, message)
	os.Exit(status)
}

// detach takes the socket away from the netpoller: it duplicates the fd, closes the
// net.Conn (which deregisters the original from epoll) and makes the copy blocking.
func detach(c *net.TCPConn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		c.Close()
		return -1, err
	}
	fd := -1
	var dupErr error
	ctlErr := rc.Control(func(s uintptr) {
		r, _, errno := syscall.Syscall(syscall.SYS_FCNTL, s, syscall.F_DUPFD_CLOEXEC, 0)
		if errno != 0 {
			dupErr = errno
			return
		}
		fd = int(r)
	})
	c.Close()
	if ctlErr != nil {
		return -1, ctlErr
	}
	if dupErr != nil {
		return -1, dupErr
	}
	// O_NONBLOCK lives on the shared file description; clear it for our copy.
	if err := syscall.SetNonblock(fd, false); err != nil {
		syscall.Close(fd)
		return -1, err
	}
	return fd, nil
}

// readFull reads exactly len(b) bytes; false on EOF or error.
func readFull(fd int, b []byte) bool {
	for n := 0; n < len(b); {
		m, err := syscall.Read(fd, b[n:])
		if err == syscall.EINTR {
			continue
		}
		if err != nil || m <= 0 {
			return false
		}
		n += m
	}
	return true
}

// writeAll writes all of b, resuming after partial writes; false on error.
func writeAll(fd int, b []byte) bool {
	for n := 0; n < len(b); {
		m, err := syscall.Write(fd, b[n:])
		if err == syscall.EINTR {
			continue
		}
		if err != nil || m <= 0 {
			return false
		}
		n += m
	}
	return true
}

// connections counts the connections being served; procs keeps GOMAXPROCS above it.
var connections atomic.Int64

// procs raises GOMAXPROCS, doubling, until every connection's thread and the acceptor can
// hold a P at once (each raise stops the world, hence doubling). Called by the acceptor only.
type procs struct {
	n     int
	fixed bool // GOMAXPROCS was set in the environment: leave it
}

func (p *procs) fit(conns int) {
	if p.fixed || conns < p.n {
		return
	}
	for p.n <= conns {
		p.n *= 2
	}
	runtime.GOMAXPROCS(p.n)
}

// serve owns one OS thread for the connection's lifetime. It never unlocks, so the
// thread exits with the goroutine, as a pthread per connection would.
func serve(c *net.TCPConn) {
	defer connections.Add(-1)
	runtime.LockOSThread()
	fd, err := detach(c)
	if err != nil {
		return
	}
	defer syscall.Close(fd)
	var word [4]byte
	for {
		if !readFull(fd, word[:]) {
			return
		}
		v := binary.BigEndian.Uint32(word[:])
		if v == 0 {
			os.Exit(0)
		}
		binary.BigEndian.PutUint32(word[:], v+1)
		if !writeAll(fd, word[:]) {
			return
		}
	}
}

func main() {
	addr := parseArgs(os.Args[1:])
	// Every connection pins a thread; the runtime's default cap (10000) would crash
	// the process before the kernel's own limits are reached.
	debug.SetMaxThreads(1 << 20)

	// net.Listen sets SO_REUSEADDR and uses the kernel's somaxconn as backlog;
	// accepted TCP connections get TCP_NODELAY, which the duplicated fd shares.
	ln, err := net.ListenTCP("tcp4", net.TCPAddrFromAddrPort(addr))
	if err != nil {
		fmt.Fprintln(os.Stderr, "go-blocking:", err)
		os.Exit(1)
	}
	_, fixed := os.LookupEnv("GOMAXPROCS")
	slots := procs{n: runtime.GOMAXPROCS(0), fixed: fixed}
	for {
		c, err := ln.AcceptTCP()
		if err != nil {
			// E.g. EMFILE: back off instead of spinning, keep serving the others.
			time.Sleep(5 * time.Millisecond)
			continue
		}
		slots.fit(int(connections.Add(1)))
		go serve(c)
	}
}
