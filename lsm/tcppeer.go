package lsm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// ErrNotLocal is returned (wrapped) by LoopbackPeerUID for a connection
// whose remote address is not a loopback address: such a peer may be on
// another machine and has no local uid.
var ErrNotLocal = errors.New("peer is not on loopback")

// notExistError is an error that is os.ErrNotExist for errors.Is: the
// peer's socket is not, or no longer, there to be asked.
type notExistError string

func (e notExistError) Error() string      { return string(e) }
func (notExistError) Is(target error) bool { return target == os.ErrNotExist }

// Layouts mirrored by hand (golang.org/x/sys/unix v0.49.0 has the netlink
// constants but not these structs), from include/uapi/linux/inet_diag.h:
//
//	struct inet_diag_sockid {	// 48 bytes
//		__be16	idiag_sport;	// 0
//		__be16	idiag_dport;	// 2
//		__be32	idiag_src[4];	// 4
//		__be32	idiag_dst[4];	// 20
//		__u32	idiag_if;	// 36
//		__u32	idiag_cookie[2];	// 40
//	};
//	struct inet_diag_req_v2 {	// 56 bytes
//		__u8	sdiag_family;	// 0
//		__u8	sdiag_protocol;	// 1
//		__u8	idiag_ext;	// 2
//		__u8	pad;	// 3
//		__u32	idiag_states;	// 4
//		struct inet_diag_sockid id;	// 8
//	};
//	struct inet_diag_msg {	// 72 bytes
//		__u8	idiag_family;	// 0
//		__u8	idiag_state;	// 1
//		__u8	idiag_timer;	// 2
//		__u8	idiag_retrans;	// 3
//		struct inet_diag_sockid id;	// 4
//		__u32	idiag_expires;	// 52
//		__u32	idiag_rqueue;	// 56
//		__u32	idiag_wqueue;	// 60
//		__u32	idiag_uid;	// 64
//		__u32	idiag_inode;	// 68
//	};
//
// All fields are naturally aligned, so there is no padding; the __be
// fields are in network byte order, the others in host order.
const (
	sizeofInetDiagSockID = 48
	sizeofInetDiagReqV2  = 56
	sizeofInetDiagMsg    = 72

	reqIDOff = 8 // id in inet_diag_req_v2
	msgIDOff = 4 // id in inet_diag_msg
	msgUID   = 64

	inetDiagNoCookie = 0xffffffff // INET_DIAG_NOCOOKIE

	// idiag_timer 3 is the TIME_WAIT timer: only timewait sockets, which
	// inet_diag reports with idiag_uid 0, have it (net/ipv4/inet_diag.c,
	// inet_twsk_diag_fill).
	diagTimerTimeWait = 3
)

// TCP states (include/net/tcp_states.h).
const (
	tcpEstablished = 1
	tcpFinWait1    = 4
	tcpFinWait2    = 5
	tcpTimeWait    = 6
	tcpCloseWait   = 8
	tcpLastAck     = 9
	tcpClosing     = 11
)

// diagSeq numbers the requests, so that a reply is matched to its request.
var diagSeq atomic.Uint32

// LoopbackPeerUID returns the uid that created the client end of c, a TCP
// connection accepted from a loopback address, without reading from c.
//
// It asks the kernel over NETLINK_SOCK_DIAG (include/uapi/linux/sock_diag.h,
// include/uapi/linux/inet_diag.h) for the one socket whose local address
// is c's remote address and whose remote address is c's local address:
// a SOCK_DIAG_BY_FAMILY request without NLM_F_DUMP, which the kernel
// answers by an exact lookup (net/ipv4/inet_diag.c, inet_diag_cmd_exact
// and inet_diag_find_one_icsk) with one struct inet_diag_msg. Its
// idiag_uid is the socket's owner (sk_uid, the fsuid of the process that
// created the socket), as "ss -tne" shows it. The lookup happens in the
// caller's network namespace, which for a loopback connection is also
// the peer's; the uid is translated into the caller's user namespace.
//
// For a remote address outside 127.0.0.0/8 and ::1 (or ::ffff:127.0.0.0/104)
// the error wraps ErrNotLocal and nothing is asked. When the peer has
// already closed and its socket is gone, or has become a timewait socket
// (which inet_diag reports with uid 0, whoever owned it), the error is
// os.ErrNotExist for errors.Is; so is it when the kernel lacks tcp_diag
// (CONFIG_INET_TCP_DIAG), which the kernel reports as ENOENT too. An answer
// is only taken for the exact addresses and ports asked for, so that a
// socket listening on the peer's address and port, which the kernel falls
// back to when no connected socket matches, is never taken for the peer.
// A client that bound its socket to a device (SO_BINDTODEVICE) is not
// found either. Callers must therefore treat any error as "uid unknown",
// never as a uid.
//
// Each call opens a netlink socket, sends one request, receives one reply
// (waiting at most 1 s) and closes the socket.
func LoopbackPeerUID(c *net.TCPConn) (uint32, error) {
	if c == nil {
		return 0, errors.New("look up loopback peer: nil connection")
	}
	la, ok := c.LocalAddr().(*net.TCPAddr)
	if !ok || la == nil {
		return 0, errors.New("look up loopback peer: no local address")
	}
	ra, ok := c.RemoteAddr().(*net.TCPAddr)
	if !ok || ra == nil {
		return 0, errors.New("look up loopback peer: no remote address")
	}
	return loopbackPeerUID(la.AddrPort(), ra.AddrPort())
}

// loopbackPeerUID looks up the socket whose local address is remote and
// whose remote address is local; see LoopbackPeerUID.
func loopbackPeerUID(local, remote netip.AddrPort) (uint32, error) {
	var buf [4096]byte
	m, err := sockDiagExact(buf[:], local, remote)
	if err != nil {
		return 0, err
	}
	return diagMsgUID(m,
		netip.AddrPortFrom(local.Addr().Unmap(), local.Port()),
		netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port()))
}

// sockDiagExact sends the exact lookup of the socket at remote connected
// to local, receives the reply into buf, and returns the inet_diag_msg
// in it (within buf), whose addresses and state it does not check.
func sockDiagExact(buf []byte, local, remote netip.AddrPort) ([]byte, error) {
	seq := diagSeq.Add(1)
	var req [unix.SizeofNlMsghdr + sizeofInetDiagReqV2]byte
	if err := diagRequest(req[:], seq, local, remote); err != nil {
		return nil, err
	}
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, fmt.Errorf("open sock_diag socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 1}); err != nil {
		return nil, fmt.Errorf("set sock_diag receive timeout: %w", err)
	}
	if err := unix.Sendto(fd, req[:], 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("query sock_diag: %w", err)
	}
	var n int
	var from unix.Sockaddr
	for {
		// MSG_TRUNC: n is the datagram's whole length, even when it
		// did not fit. EINTR: SO_RCVTIMEO makes recvfrom not restart.
		n, from, err = unix.Recvfrom(fd, buf, unix.MSG_TRUNC)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		if err == unix.EAGAIN {
			return nil, fmt.Errorf("query sock_diag: no reply within 1s: %w", err)
		}
		return nil, fmt.Errorf("query sock_diag: %w", err)
	}
	if sa, ok := from.(*unix.SockaddrNetlink); !ok || sa.Pid != 0 {
		return nil, errors.New("query sock_diag: reply not from the kernel")
	}
	if n > len(buf) {
		return nil, fmt.Errorf("query sock_diag: reply of %d bytes exceeds %d", n, len(buf))
	}
	return parseDiagReply(buf[:n], seq, remote)
}

// diagRequest writes into b (nlmsghdr + inet_diag_req_v2) the exact
// lookup of the TCP socket whose local address is remote and whose
// remote address is local. It fails, wrapping ErrNotLocal, unless
// remote is a loopback address.
func diagRequest(b []byte, seq uint32, local, remote netip.AddrPort) error {
	la, ra := local.Addr().Unmap(), remote.Addr().Unmap()
	if !ra.IsValid() || !la.IsValid() {
		return errors.New("look up loopback peer: no address")
	}
	if !ra.IsLoopback() {
		return fmt.Errorf("look up loopback peer %s: %w", remote, ErrNotLocal)
	}
	if la.Is4() != ra.Is4() {
		return fmt.Errorf("look up loopback peer %s: local address %s of another family", remote, local)
	}
	family := byte(unix.AF_INET6)
	if ra.Is4() {
		family = unix.AF_INET
	}
	if len(b) < unix.SizeofNlMsghdr+sizeofInetDiagReqV2 {
		panic("lsm: diagRequest buffer too small")
	}
	ne := binary.NativeEndian
	clear(b)
	// struct nlmsghdr
	ne.PutUint32(b[0:], unix.SizeofNlMsghdr+sizeofInetDiagReqV2)
	ne.PutUint16(b[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(b[6:], unix.NLM_F_REQUEST) // no NLM_F_DUMP: exact lookup
	ne.PutUint32(b[8:], seq)
	// struct inet_diag_req_v2
	r := b[unix.SizeofNlMsghdr:]
	r[0] = family
	r[1] = unix.IPPROTO_TCP
	ne.PutUint32(r[4:], 0xffffffff) // idiag_states: all (not applied to exact lookups)
	id := r[reqIDOff : reqIDOff+sizeofInetDiagSockID]
	binary.BigEndian.PutUint16(id[0:], remote.Port()) // idiag_sport: the peer's
	binary.BigEndian.PutUint16(id[2:], local.Port())  // idiag_dport: ours
	putDiagAddr(id[4:20], ra)
	putDiagAddr(id[20:36], la)
	ne.PutUint32(id[40:], inetDiagNoCookie)
	ne.PutUint32(id[44:], inetDiagNoCookie)
	return nil
}

// putDiagAddr writes a into an idiag_src or idiag_dst field: an IPv4
// address in its first four bytes, an IPv6 address in all sixteen.
func putDiagAddr(dst []byte, a netip.Addr) {
	if a.Is4() {
		v := a.As4()
		copy(dst, v[:])
		return
	}
	v := a.As16()
	copy(dst, v[:])
}

// diagAddr reads an idiag_src or idiag_dst field of a socket of the given
// family, unmapping a v4-mapped IPv6 address.
func diagAddr(family byte, src []byte) (netip.Addr, bool) {
	switch family {
	case unix.AF_INET:
		return netip.AddrFrom4([4]byte(src[:4])), true
	case unix.AF_INET6:
		return netip.AddrFrom16([16]byte(src[:16])).Unmap(), true
	}
	return netip.Addr{}, false
}

// parseDiagReply reads the answer to request seq, about the socket at
// remote, from one netlink datagram and returns its inet_diag_msg.
func parseDiagReply(b []byte, seq uint32, remote netip.AddrPort) ([]byte, error) {
	ne := binary.NativeEndian
	for len(b) > 0 {
		if len(b) < unix.SizeofNlMsghdr {
			return nil, fmt.Errorf("query sock_diag: %d trailing bytes, short of a netlink header", len(b))
		}
		l := ne.Uint32(b[0:])
		typ := ne.Uint16(b[4:])
		if l < unix.SizeofNlMsghdr || uint64(l) > uint64(len(b)) {
			return nil, fmt.Errorf("query sock_diag: netlink message length %d out of range [%d, %d]", l, unix.SizeofNlMsghdr, len(b))
		}
		m := b[:l]
		if next := nlmsgAlign(int(l)); next < len(b) {
			b = b[next:]
		} else {
			b = nil
		}
		if ne.Uint32(m[8:]) != seq {
			continue // not an answer to this request
		}
		data := m[unix.SizeofNlMsghdr:]
		switch typ {
		case unix.NLMSG_ERROR:
			if len(data) < 4 {
				return nil, fmt.Errorf("query sock_diag: error message of %d bytes", len(m))
			}
			e := int32(ne.Uint32(data))
			if e == 0 {
				return nil, errors.New("query sock_diag: acknowledged without an answer")
			}
			if e < 0 {
				e = -e
			}
			if errno := unix.Errno(e); errno != unix.ENOENT {
				return nil, fmt.Errorf("query sock_diag: %w", errno)
			}
			return nil, fmt.Errorf("look up loopback peer %s: %w", remote, notExistError("no socket"))
		case unix.NLMSG_DONE:
			return nil, fmt.Errorf("look up loopback peer %s: %w", remote, notExistError("no socket"))
		case unix.SOCK_DIAG_BY_FAMILY:
			if len(data) < sizeofInetDiagMsg {
				return nil, fmt.Errorf("query sock_diag: inet_diag_msg of %d bytes, want %d", len(data), sizeofInetDiagMsg)
			}
			return data[:sizeofInetDiagMsg], nil
		}
	}
	return nil, errors.New("query sock_diag: no answer in the reply")
}

// diagMsgUID checks that an inet_diag_msg describes a live socket at
// remote connected to local, and returns its idiag_uid.
func diagMsgUID(m []byte, local, remote netip.AddrPort) (uint32, error) {
	family, state, timer := m[0], m[1], m[2]
	id := m[msgIDOff : msgIDOff+sizeofInetDiagSockID]
	src, ok1 := diagAddr(family, id[4:20])
	dst, ok2 := diagAddr(family, id[20:36])
	if !ok1 || !ok2 {
		return 0, fmt.Errorf("query sock_diag: answer of address family %d", family)
	}
	got := netip.AddrPortFrom(src, binary.BigEndian.Uint16(id[0:]))
	peer := netip.AddrPortFrom(dst, binary.BigEndian.Uint16(id[2:]))
	if got != remote || peer != local {
		// A socket listening on the peer's address and port: the
		// kernel falls back to it when no connected socket matches.
		return 0, fmt.Errorf("look up loopback peer %s: %w (the kernel answered for %s -> %s, state %d)",
			remote, notExistError("no socket"), got, peer, state)
	}
	if timer == diagTimerTimeWait || state == tcpTimeWait {
		return 0, fmt.Errorf("look up loopback peer %s: %w", remote, notExistError("socket closed (in TIME_WAIT)"))
	}
	switch state {
	case tcpEstablished, tcpFinWait1, tcpFinWait2, tcpCloseWait, tcpLastAck, tcpClosing:
	default:
		// SYN_SENT, SYN_RECV, LISTEN, CLOSE: not the client end of an
		// accepted connection.
		return 0, fmt.Errorf("look up loopback peer %s: socket in unexpected TCP state %d", remote, state)
	}
	return binary.NativeEndian.Uint32(m[msgUID:]), nil
}

// nlmsgAlign is NLMSG_ALIGN (include/uapi/linux/netlink.h).
func nlmsgAlign(n int) int { return (n + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1) }
