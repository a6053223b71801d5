// Goroutine per connection on the net package: blocking-style code, multiplexed by the
// Go runtime over a few OS threads through its epoll-based netpoller.
package main

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"time"
)

const usage = "usage: go -p PORT [-a ADDRESS]"

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
				fail(2, "go: -a "+args[1]+" is not an IPv4 address")
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

// serve answers each 4-byte challenge with challenge+1 until the peer goes away.
func serve(c net.Conn) {
	defer c.Close()
	var word [4]byte
	for {
		if _, err := io.ReadFull(c, word[:]); err != nil {
			return
		}
		v := binary.BigEndian.Uint32(word[:])
		if v == 0 {
			os.Exit(0)
		}
		binary.BigEndian.PutUint32(word[:], v+1)
		// Write loops over partial writes itself.
		if _, err := c.Write(word[:]); err != nil {
			return
		}
	}
}

func main() {
	addr := parseArgs(os.Args[1:])

	// net.Listen sets SO_REUSEADDR and uses the kernel's somaxconn as backlog;
	// accepted TCP connections get TCP_NODELAY by default.
	ln, err := net.Listen("tcp4", addr.String())
	if err != nil {
		fmt.Fprintln(os.Stderr, "go:", err)
		os.Exit(1)
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			// E.g. EMFILE: back off instead of spinning, keep serving the others.
			time.Sleep(5 * time.Millisecond)
			continue
		}
		go serve(c)
	}
}
