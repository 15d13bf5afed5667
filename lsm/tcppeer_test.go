package lsm

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/notifyd/notifyd/internal/rig/testenv"
)

// tcpHelperEnv makes the test binary, run with
// -test.run=^TestTCPPeerHelperProcess$, act as a TCP client: it connects
// to the address named by the variable, says hello, and then obeys one
// command line: "close" closes the connection, "reset" closes it with
// SO_LINGER 0 (an RST, so that no TIME_WAIT socket remains); end of file
// just exits.
const tcpHelperEnv = "NOTIFYD_LSM_TCP_HELPER"

// TestTCPPeerHelperProcess is not a test: it is the child process of the
// tests below when tcpHelperEnv is set, and does nothing otherwise.
func TestTCPPeerHelperProcess(t *testing.T) {
	addr := os.Getenv(tcpHelperEnv)
	if addr == "" {
		return
	}
	os.Exit(tcpHelper(addr))
}

func tcpHelper(addr string) int {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tcp helper:", err)
		return 2
	}
	fmt.Fprintf(c, "hello %d\n", os.Getpid())
	line, _ := bufio.NewReader(c).ReadString('\n')
	switch strings.TrimSpace(line) {
	case "reset":
		c.(*net.TCPConn).SetLinger(0)
	}
	c.Close()
	return 0
}

// tcpPeer is a TCP client: a helper process running as another user, or
// a connection of this process.
type tcpPeer struct {
	uid  uint32
	cmd  *exec.Cmd    // the helper process, nil for an in-process peer
	conn *net.TCPConn // the in-process client end, nil for a helper
}

// close closes the client end, with an RST when reset, and waits until
// the helper process, if any, has exited.
func (p *tcpPeer) close(t *testing.T, server *net.TCPConn, reset bool) {
	t.Helper()
	if p.conn != nil {
		if reset {
			p.conn.SetLinger(0)
		}
		p.conn.Close()
		return
	}
	cmd := "close\n"
	if reset {
		cmd = "reset\n"
	}
	if _, err := io.WriteString(server, cmd); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Wait(); err != nil {
		t.Fatalf("tcp helper: %v", err)
	}
}

// nobody returns the uid and gid of the user nobody.
func nobody(t *testing.T) (uid, gid uint32) {
	t.Helper()
	u, err := user.Lookup("nobody")
	if err != nil {
		testenv.Missing(t, "user nobody: "+err.Error(), "useradd -r -M -s /usr/sbin/nologin nobody")
	}
	uv, _ := strconv.ParseUint(u.Uid, 10, 32)
	gv, _ := strconv.ParseUint(u.Gid, 10, 32)
	if uint32(uv) == uint32(os.Getuid()) {
		t.Fatalf("nobody has our uid %d", uv)
	}
	return uint32(uv), uint32(gv)
}

// startHelperAs starts the TCP helper as uid/gid, connecting to ln, and
// returns the accepted connection, before reading from it.
func startHelperAs(t *testing.T, ln *net.TCPListener, uid, gid uint32) (*tcpPeer, *net.TCPConn) {
	t.Helper()
	w := newWorld(t) // a copy of the test binary that uid can run
	cmd := exec.Command(w.bin, "-test.run=^TestTCPPeerHelperProcess$")
	cmd.Env = []string{tcpHelperEnv + "=" + ln.Addr().String()}
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	ln.SetDeadline(time.Now().Add(20 * time.Second))
	c, err := ln.AcceptTCP()
	if err != nil {
		t.Fatalf("accept from tcp helper as uid %d: %v", uid, err)
	}
	t.Cleanup(func() { c.Close() })
	return &tcpPeer{uid: uid, cmd: cmd}, c
}

// readHello checks that the helper behind c is the process p started.
func (p *tcpPeer) readHello(t *testing.T, c *net.TCPConn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Time{})
	var pid int
	fmt.Sscanf(line, "hello %d", &pid)
	if pid != p.cmd.Process.Pid {
		t.Fatalf("helper says pid %d, started %d", pid, p.cmd.Process.Pid)
	}
}

// connectSelf connects to ln from this process (from laddr when not nil)
// and returns both ends.
func connectSelf(t *testing.T, ln *net.TCPListener, laddr *net.TCPAddr) (client, server *net.TCPConn) {
	t.Helper()
	d := net.Dialer{Timeout: 10 * time.Second}
	if laddr != nil {
		d.LocalAddr = laddr
	}
	cc, err := d.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	client = cc.(*net.TCPConn)
	t.Cleanup(func() { client.Close() })
	ln.SetDeadline(time.Now().Add(10 * time.Second))
	server, err = ln.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close() })
	return client, server
}

func listenTCP(t *testing.T, network, addr string) *net.TCPListener {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.(*net.TCPListener)
}

// wantOwnUID checks that the peer of server is found with our uid.
func wantOwnUID(t *testing.T, server *net.TCPConn) {
	t.Helper()
	uid, err := LoopbackPeerUID(server)
	if err != nil {
		t.Fatalf("%v -> %v: %v", server.RemoteAddr(), server.LocalAddr(), err)
	}
	if uid != uint32(os.Getuid()) {
		t.Fatalf("%v -> %v: uid %d, want ours, %d", server.RemoteAddr(), server.LocalAddr(), uid, os.Getuid())
	}
}

func TestIntegrationTCPPeerIPv4(t *testing.T) {
	ln := listenTCP(t, "tcp4", "127.0.0.1:0")
	t.Run("127.0.0.1", func(t *testing.T) {
		_, server := connectSelf(t, ln, nil)
		wantOwnUID(t, server)
	})
	t.Run("127.0.0.2", func(t *testing.T) { // all of 127.0.0.0/8 is loopback
		_, server := connectSelf(t, ln, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)})
		if got := server.RemoteAddr().(*net.TCPAddr).IP; !got.Equal(net.IPv4(127, 0, 0, 2)) {
			t.Fatalf("remote address %v, want 127.0.0.2", got)
		}
		wantOwnUID(t, server)
	})
	t.Run("concurrent", func(t *testing.T) {
		var servers []*net.TCPConn
		for range 8 {
			_, s := connectSelf(t, ln, nil)
			servers = append(servers, s)
		}
		var wg sync.WaitGroup
		errs := make(chan error, len(servers)*20)
		for _, s := range servers {
			wg.Go(func() {
				for range 20 {
					uid, err := LoopbackPeerUID(s)
					if err == nil && uid != uint32(os.Getuid()) {
						err = fmt.Errorf("uid %d, want %d", uid, os.Getuid())
					}
					if err != nil {
						errs <- err
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})
}

func TestIntegrationTCPPeerIPv6(t *testing.T) {
	ln, err := net.Listen("tcp6", "[::1]:0")
	testenv.Require(t, err, "IPv6 loopback ::1", "sysctl -w net.ipv6.conf.lo.disable_ipv6=0")
	defer ln.Close()
	_, server := connectSelf(t, ln.(*net.TCPListener), nil)
	if ip := server.RemoteAddr().(*net.TCPAddr).IP; !ip.Equal(net.IPv6loopback) {
		t.Fatalf("remote address %v, want ::1", ip)
	}
	wantOwnUID(t, server)
}

// v6Socket returns an AF_INET6 TCP socket (not IPV6_V6ONLY) as a file.
func v6Socket(t *testing.T) int {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	testenv.Require(t, err, "AF_INET6 sockets", "a kernel with IPv6")
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0); err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	return fd
}

var mappedLoopback = [16]byte{10: 0xff, 11: 0xff, 12: 127, 15: 1} // ::ffff:127.0.0.1

// TestIntegrationTCPPeerV4Mapped covers AF_INET6 sockets with v4-mapped
// addresses on either end: the request is AF_INET, and the kernel may
// answer with an AF_INET6 inet_diag_msg carrying ::ffff:127.0.0.1.
func TestIntegrationTCPPeerV4Mapped(t *testing.T) {
	// An AF_INET6 listener bound to ::ffff:127.0.0.1 (rather than a
	// dual-stack one on [::], reachable from the network).
	lfd := v6Socket(t)
	if err := unix.Bind(lfd, &unix.SockaddrInet6{Addr: mappedLoopback}); err != nil {
		unix.Close(lfd)
		t.Fatal(err)
	}
	if err := unix.Listen(lfd, 16); err != nil {
		unix.Close(lfd)
		t.Fatal(err)
	}
	lf := os.NewFile(uintptr(lfd), "v6 listener")
	l, err := net.FileListener(lf)
	lf.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ln6 := l.(*net.TCPListener)
	ln4 := listenTCP(t, "tcp4", "127.0.0.1:0")

	// dialV6 connects an AF_INET6 socket to ::ffff:127.0.0.1:port.
	dialV6 := func(t *testing.T, ln *net.TCPListener) *net.TCPConn {
		fd := v6Socket(t)
		port := ln.Addr().(*net.TCPAddr).Port
		if err := unix.Connect(fd, &unix.SockaddrInet6{Addr: mappedLoopback, Port: port}); err != nil {
			unix.Close(fd)
			t.Fatal(err)
		}
		f := os.NewFile(uintptr(fd), "v6 client")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		ln.SetDeadline(time.Now().Add(10 * time.Second))
		s, err := ln.AcceptTCP()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	// family is the address family the kernel reports for server's peer.
	family := func(t *testing.T, server *net.TCPConn) byte {
		var buf [4096]byte
		m, err := sockDiagExact(buf[:], server.LocalAddr().(*net.TCPAddr).AddrPort(), server.RemoteAddr().(*net.TCPAddr).AddrPort())
		if err != nil {
			t.Fatal(err)
		}
		return m[0]
	}

	t.Run("v6 listener, v4 client", func(t *testing.T) {
		_, server := connectSelf(t, ln6, nil)
		wantOwnUID(t, server)
		if f := family(t, server); f != unix.AF_INET {
			t.Errorf("peer family %d, want AF_INET", f)
		}
	})
	t.Run("v4 listener, v6 client", func(t *testing.T) {
		server := dialV6(t, ln4)
		if f := family(t, server); f != unix.AF_INET6 {
			t.Fatalf("peer family %d, want AF_INET6: the v4-mapped answer is not exercised", f)
		}
		wantOwnUID(t, server)
	})
	t.Run("v6 listener, v6 client", func(t *testing.T) {
		server := dialV6(t, ln6)
		if f := family(t, server); f != unix.AF_INET6 {
			t.Fatalf("peer family %d, want AF_INET6", f)
		}
		wantOwnUID(t, server)
	})
}

// TestIntegrationTCPPeerOtherUser is the test that proves the feature: a
// process running as nobody connects, and its uid, not ours, is found.
func TestIntegrationTCPPeerOtherUser(t *testing.T) {
	testenv.Root(t, "runs a TCP client as the user nobody")
	uid, gid := nobody(t)
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0"} {
		t.Run(addr, func(t *testing.T) {
			l, err := net.Listen("tcp", addr)
			if addr[0] == '[' {
				testenv.Require(t, err, "IPv6 loopback ::1", "sysctl -w net.ipv6.conf.lo.disable_ipv6=0")
			} else if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			ln := l.(*net.TCPListener)
			p, server := startHelperAs(t, ln, uid, gid)
			got, err := LoopbackPeerUID(server) // before reading a byte
			if err != nil {
				t.Fatal(err)
			}
			p.readHello(t, server)
			if got != uid {
				t.Fatalf("peer uid %d, want nobody's %d (we are %d)", got, uid, os.Getuid())
			}
			p.close(t, server, false)
		})
	}
}

// TestIntegrationTCPPeerClosed checks that a peer that has closed, or is
// gone, gives an error and never a wrong uid. After a normal close the
// client end becomes a timewait socket, which inet_diag reports with
// uid 0: as root, only a helper running as another user shows whether
// that 0 is taken for the peer's uid, so the helper is used when root.
func TestIntegrationTCPPeerClosed(t *testing.T) {
	for _, reset := range []bool{false, true} {
		t.Run(fmt.Sprintf("reset=%v", reset), func(t *testing.T) {
			ln := listenTCP(t, "tcp4", "127.0.0.1:0")
			var p *tcpPeer
			var server *net.TCPConn
			if os.Geteuid() == 0 {
				uid, gid := nobody(t)
				p, server = startHelperAs(t, ln, uid, gid)
				p.readHello(t, server)
			} else {
				client, s := connectSelf(t, ln, nil)
				p, server = &tcpPeer{uid: uint32(os.Getuid()), conn: client}, s
			}
			if got, err := LoopbackPeerUID(server); err != nil || got != p.uid {
				t.Fatalf("before close: uid %d, %v; want %d", got, err, p.uid)
			}
			p.close(t, server, reset)
			// The client's FIN or RST has arrived when a read ends.
			server.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.Copy(io.Discard, server); err != nil && !reset {
				t.Fatal(err)
			}
			la := server.LocalAddr().(*net.TCPAddr).AddrPort()
			ra := server.RemoteAddr().(*net.TCPAddr).AddrPort()
			// raw is what the kernel says of the client end, unchecked.
			raw := func() (state, timer byte, uid uint32, err error) {
				var buf [4096]byte
				m, err := sockDiagExact(buf[:], la, ra)
				if err != nil {
					return 0, 0, 0, err
				}
				return m[1], m[2], binary.NativeEndian.Uint32(m[msgUID:]), nil
			}
			// settle waits until the client end is gone or has left the
			// given states (FIN_WAIT1 until our ACK of its FIN is in,
			// FIN_WAIT2 until our FIN is in).
			settle := func(leaving ...byte) {
				for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
					st, _, _, err := raw()
					if err != nil || !slices.Contains(leaving, st) {
						return
					}
				}
			}
			check := func(stage string, wantGone bool) {
				t.Helper()
				desc := ""
				if st, timer, uid, err := raw(); err == nil {
					desc = fmt.Sprintf("state=%d timer=%d uid=%d", st, timer, uid)
				} else {
					desc = err.Error()
				}
				got, err := LoopbackPeerUID(server)
				t.Logf("%s: kernel answers %s; LoopbackPeerUID: %d, %v", stage, desc, got, err)
				switch {
				case err == nil && got != p.uid:
					t.Fatalf("%s: wrong uid %d, want %d or an error", stage, got, p.uid)
				case err == nil && wantGone:
					t.Fatalf("%s: uid %d for a socket that is gone", stage, got)
				case err != nil && !errors.Is(err, os.ErrNotExist):
					t.Fatalf("%s: %v, want an error that is os.ErrNotExist", stage, err)
				}
			}
			// After a normal close the client end becomes a timewait
			// socket, which inet_diag reports with uid 0: in substate
			// FIN_WAIT2 (state 5, timer 3) once we have acknowledged its
			// FIN, in TIME_WAIT (state 6) once it has our FIN. After an
			// RST it is gone.
			settle(tcpFinWait1)
			check("client closed", reset)
			server.Close()
			settle(tcpFinWait2)
			check("both closed", reset)
			ln.Close()
			check("listener closed", reset)
		})
	}
}

func TestTCPPeerNotLocal(t *testing.T) {
	local := netip.MustParseAddrPort("127.0.0.1:7469")
	local6 := netip.MustParseAddrPort("[::1]:7469")
	for _, r := range []string{"192.0.2.1:5000", "10.0.0.1:5000", "[::ffff:10.0.0.1]:5000",
		"[2001:db8::1]:5000", "[fe80::1]:5000", "0.0.0.0:5000", "[::]:5000", "[::ffff:0.0.0.1]:5000"} {
		remote := netip.MustParseAddrPort(r)
		l := local
		if remote.Addr().Is6() && !remote.Addr().Is4In6() {
			l = local6
		}
		var req [unix.SizeofNlMsghdr + sizeofInetDiagReqV2]byte
		if err := diagRequest(req[:], 1, l, remote); !errors.Is(err, ErrNotLocal) {
			t.Errorf("diagRequest for %s: %v, want ErrNotLocal", remote, err)
		}
		// ErrNotLocal comes from diagRequest, before any socket is opened.
		if _, err := loopbackPeerUID(l, remote); !errors.Is(err, ErrNotLocal) {
			t.Errorf("loopbackPeerUID for %s: %v, want ErrNotLocal", remote, err)
		}
	}
	for _, r := range []string{"127.0.0.1:5000", "127.255.0.9:5000", "[::1]:5000", "[::ffff:127.0.0.1]:5000"} {
		remote := netip.MustParseAddrPort(r)
		l := local
		if remote.Addr().Is6() && !remote.Addr().Is4In6() {
			l = local6
		}
		var req [unix.SizeofNlMsghdr + sizeofInetDiagReqV2]byte
		if err := diagRequest(req[:], 1, l, remote); err != nil {
			t.Errorf("diagRequest for %s: %v", remote, err)
		}
	}
}

// TestTCPPeerRequestLayout checks the request bytes against the layout
// of struct nlmsghdr and struct inet_diag_req_v2.
func TestTCPPeerRequestLayout(t *testing.T) {
	var b [unix.SizeofNlMsghdr + sizeofInetDiagReqV2]byte
	if err := diagRequest(b[:], 42, netip.MustParseAddrPort("[::ffff:127.0.0.1]:7469"), netip.MustParseAddrPort("127.0.0.5:4660")); err != nil {
		t.Fatal(err)
	}
	ne := binary.NativeEndian
	want := []struct {
		name      string
		got, want uint64
	}{
		{"nlmsg_len", uint64(ne.Uint32(b[0:])), 72},
		{"nlmsg_type", uint64(ne.Uint16(b[4:])), unix.SOCK_DIAG_BY_FAMILY},
		{"nlmsg_flags", uint64(ne.Uint16(b[6:])), unix.NLM_F_REQUEST},
		{"nlmsg_seq", uint64(ne.Uint32(b[8:])), 42},
		{"sdiag_family", uint64(b[16]), unix.AF_INET},
		{"sdiag_protocol", uint64(b[17]), unix.IPPROTO_TCP},
		{"idiag_states", uint64(ne.Uint32(b[20:])), 0xffffffff},
		{"idiag_sport", uint64(b[24])<<8 | uint64(b[25]), 4660},
		{"idiag_dport", uint64(b[26])<<8 | uint64(b[27]), 7469},
		{"idiag_src[0]", uint64(b[28])<<24 | uint64(b[29])<<16 | uint64(b[30])<<8 | uint64(b[31]), 0x7f000005},
		{"idiag_dst[0]", uint64(b[44])<<24 | uint64(b[45])<<16 | uint64(b[46])<<8 | uint64(b[47]), 0x7f000001},
		{"idiag_if", uint64(ne.Uint32(b[60:])), 0},
		{"idiag_cookie[0]", uint64(ne.Uint32(b[64:])), 0xffffffff},
		{"idiag_cookie[1]", uint64(ne.Uint32(b[68:])), 0xffffffff},
	}
	for _, w := range want {
		if w.got != w.want {
			t.Errorf("%s = %#x, want %#x", w.name, w.got, w.want)
		}
	}
}

// TestTCPPeerReply feeds parseDiagReply and diagMsgUID hand-made replies.
func TestTCPPeerReply(t *testing.T) {
	local := netip.MustParseAddrPort("127.0.0.1:7469")
	remote := netip.MustParseAddrPort("127.0.0.1:40000")
	ne := binary.NativeEndian
	hdr := func(l uint32, typ uint16, seq uint32) []byte {
		b := make([]byte, 16)
		ne.PutUint32(b[0:], l)
		ne.PutUint16(b[4:], typ)
		ne.PutUint32(b[8:], seq)
		return b
	}
	msg := func(family, state, timer byte, src, dst netip.AddrPort, uid uint32) []byte {
		m := make([]byte, sizeofInetDiagMsg)
		m[0], m[1], m[2] = family, state, timer
		binary.BigEndian.PutUint16(m[4:], src.Port())
		binary.BigEndian.PutUint16(m[6:], dst.Port())
		putDiagAddr(m[8:24], src.Addr())
		putDiagAddr(m[24:40], dst.Addr())
		ne.PutUint32(m[msgUID:], uid)
		return m
	}
	diag := func(seq uint32, m []byte) []byte {
		return append(hdr(uint32(16+len(m)), unix.SOCK_DIAG_BY_FAMILY, seq), m...)
	}
	errMsg := func(seq uint32, errno int32) []byte {
		b := hdr(36, unix.NLMSG_ERROR, seq)
		e := make([]byte, 20)
		ne.PutUint32(e, uint32(errno))
		return append(b, e...)
	}
	good := msg(unix.AF_INET, tcpEstablished, 0, remote, local, 1000)
	mapped := msg(unix.AF_INET6, tcpFinWait1, 0,
		netip.MustParseAddrPort("[::ffff:127.0.0.1]:40000"), netip.MustParseAddrPort("[::ffff:127.0.0.1]:7469"), 1001)
	cases := []struct {
		name    string
		reply   []byte
		uid     uint32
		err     string
		notHere bool // errors.Is(err, os.ErrNotExist)
	}{
		{name: "answer", reply: diag(7, good), uid: 1000},
		{name: "v4-mapped answer", reply: diag(7, mapped), uid: 1001},
		{name: "answer with attributes", reply: append(diag(7, append(good, 5, 0, 8, 0, 0, 0, 0, 0)), 0), uid: 1000},
		{name: "other seq first", reply: append(diag(6, msg(unix.AF_INET, 1, 0, remote, local, 0)), diag(7, good)...), uid: 1000},
		{name: "empty", reply: nil, err: "no answer"},
		{name: "short header", reply: hdr(16, unix.SOCK_DIAG_BY_FAMILY, 7)[:10], err: "short of a netlink header"},
		{name: "len below header", reply: hdr(8, unix.SOCK_DIAG_BY_FAMILY, 7), err: "out of range"},
		{name: "len beyond buffer", reply: hdr(200, unix.SOCK_DIAG_BY_FAMILY, 7), err: "out of range"},
		{name: "short inet_diag_msg", reply: diag(7, good[:40]), err: "inet_diag_msg of 40 bytes"},
		{name: "short error", reply: hdr(16, unix.NLMSG_ERROR, 7), err: "error message"},
		{name: "ENOENT", reply: errMsg(7, -int32(unix.ENOENT)), err: "no socket", notHere: true},
		{name: "EINVAL", reply: errMsg(7, -int32(unix.EINVAL)), err: "query sock_diag: invalid argument"},
		{name: "ack", reply: errMsg(7, 0), err: "acknowledged"},
		{name: "done", reply: append(hdr(20, unix.NLMSG_DONE, 7), 0, 0, 0, 0), err: "no socket", notHere: true},
		{name: "only other seq", reply: diag(6, good), err: "no answer"},
		{name: "listener", reply: diag(7, msg(unix.AF_INET, 10, 0, local, netip.MustParseAddrPort("0.0.0.0:0"), 0)), err: "no socket", notHere: true},
		{name: "other port", reply: diag(7, msg(unix.AF_INET, tcpEstablished, 0, netip.MustParseAddrPort("127.0.0.1:40001"), local, 0)), err: "no socket", notHere: true},
		{name: "timewait FIN_WAIT2", reply: diag(7, msg(unix.AF_INET, tcpFinWait2, diagTimerTimeWait, remote, local, 0)), err: "TIME_WAIT", notHere: true},
		{name: "timewait", reply: diag(7, msg(unix.AF_INET, tcpTimeWait, diagTimerTimeWait, remote, local, 0)), err: "TIME_WAIT", notHere: true},
		{name: "SYN_SENT", reply: diag(7, msg(unix.AF_INET, 2, 1, remote, local, 0)), err: "unexpected TCP state 2"},
		{name: "family", reply: diag(7, msg(unix.AF_UNIX, tcpEstablished, 0, remote, local, 0)), err: "address family 1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var uid uint32
			m, err := parseDiagReply(c.reply, 7, remote)
			if err == nil {
				uid, err = diagMsgUID(m, local, remote)
			}
			if c.err == "" {
				if err != nil || uid != c.uid {
					t.Fatalf("uid %d, %v; want %d", uid, err, c.uid)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Fatalf("uid %d, error %v; want an error with %q", uid, err, c.err)
			}
			if errors.Is(err, os.ErrNotExist) != c.notHere {
				t.Fatalf("%v: errors.Is(err, os.ErrNotExist) = %v", err, !c.notHere)
			}
		})
	}
}

func BenchmarkTCPPeer(b *testing.B) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	client, err := net.Dial("tcp4", l.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	s, err := l.(*net.TCPListener).AcceptTCP()
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := LoopbackPeerUID(s); err != nil {
			b.Fatal(err)
		}
	}
}
