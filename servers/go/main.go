// Goroutine per connection on the net package: blocking-style code, multiplexed by the
// Go runtime over a few OS threads through its epoll-based netpoller.
package main

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"time"
)

const usage = "usage: go -p PORT"

// parsePort accepts exactly `-p PORT`, PORT a decimal in 1..65535.
func parsePort(args []string) (int, bool) {
	if len(args) != 2 || args[0] != "-p" || args[1] == "" {
		return 0, false
	}
	for _, c := range args[1] {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	port, err := strconv.ParseUint(args[1], 10, 16)
	if err != nil || port == 0 {
		return 0, false
	}
	return int(port), true
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
	port, ok := parsePort(os.Args[1:])
	if !ok {
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}

	// net.Listen sets SO_REUSEADDR and uses the kernel's somaxconn as backlog;
	// accepted TCP connections get TCP_NODELAY by default.
	ln, err := net.Listen("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
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
