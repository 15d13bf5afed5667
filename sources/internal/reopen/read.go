package reopen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Handle is what a kernel reader reads from: a handle on the runtime
// poller whose ReadInto blocks, without a thread, until it can return what
// one read(2) or recvmsg(2) gives, and whose blocked ReadInto a read
// deadline in the past unblocks. *watchqueue.Queue is one; Conn makes one
// of a descriptor.
type Handle interface {
	ReadInto(buf []byte) (int, error)
	Deadliner
}

// Parse is a reader's half of the read loop: what it does with the bytes
// and which errors are news rather than failures.
type Parse struct {
	// What names the read in the errors the loop returns: "read key
	// queue" gives "read key queue: unexpected EOF".
	What string
	// Batch takes the bytes of one read (one datagram on a socket). An
	// error ends the loop with that error, and the handle is reopened.
	Batch func(b []byte) error
	// Loss, when not nil, reports whether a read error is lost input
	// rather than a broken handle (EPIPE on /dev/kmsg, ENOBUFS on a
	// netlink socket). It records the loss; reading goes on.
	Loss func(err error) bool
	// Datagrams: a read of 0 bytes is an empty datagram for Batch, not
	// the end of the file.
	Datagrams bool
}

// ReadLoop is every kernel reader's read loop, its Hooks.Read: it reads
// h into buf and hands each read to p.Batch until ctx ends — then it
// returns ctx.Err(), whatever the read returned — or until p.Batch or the
// handle fails: the end of the file (wrapping io.ErrUnexpectedEOF), a
// closed handle (os.ErrClosed) or any other error, each wrapped as
// "p.What: …". EINTR and EAGAIN are retried. Bytes read with an error
// still go to p.Batch first.
func ReadLoop(ctx context.Context, h Handle, buf []byte, p *Parse) error {
	stop := UnblockOnDone(ctx, h)
	defer stop()
	for {
		err := ReadOnce(h, buf, p)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			return err
		}
	}
}

// ReadOnce is one step of ReadLoop, without the context: one ReadInto
// and its bytes to p.Batch. It returns nil when reading may go on.
func ReadOnce(h Handle, buf []byte, p *Parse) error {
	n, err := h.ReadInto(buf)
	if err == nil {
		if n == 0 && !p.Datagrams {
			return fmt.Errorf("%s: %w", p.What, io.ErrUnexpectedEOF)
		}
		return p.Batch(buf[:n])
	}
	if n > 0 {
		if berr := p.Batch(buf[:n]); berr != nil {
			return berr
		}
	}
	switch {
	case errors.Is(err, unix.EINTR), errors.Is(err, unix.EAGAIN):
		return nil
	case p.Loss != nil && p.Loss(err):
		return nil
	case err == io.EOF:
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("%s: %w", p.What, err)
}

// PollFile is a descriptor on the runtime poller: *os.File, or a kernel
// object wrapping one such as *fanotify.Group.
type PollFile interface {
	SyscallConn() (syscall.RawConn, error)
	Deadliner
	io.Closer
}

// Msg is what recvmsg(2) said about the last datagram besides its bytes.
type Msg struct {
	From  unix.Sockaddr // the sender
	Oob   []byte        // control messages (SCM_CREDENTIALS…), valid until the next ReadInto
	Flags int           // MSG_TRUNC: the datagram was longer than the buffer
}

// Conn reads a PollFile through its syscall.RawConn: one read(2) per
// ReadInto, or one recvmsg(2) for a Conn made by NewSocket, so that the
// reader learns when the descriptor is drained (Drained) and, on a
// socket, who sent each datagram (Msg). It is a Handle, for one reading
// goroutine.
type Conn struct {
	f      PollFile
	rc     syscall.RawConn
	closed atomic.Bool
	socket bool
	oob    []byte
	msg    Msg

	// Drained, when not nil, is called on the reading goroutine each
	// time the descriptor has nothing left to read, before ReadInto
	// waits: where a reader does what needs a drained queue (size an
	// overrun's loss, resynchronise after an overflow). Set it before
	// the first ReadInto.
	Drained func()

	// One ReadInto's state, kept here so that the callback is made once.
	buf  []byte
	n    int
	err  error
	recv func(fd uintptr) bool
}

// NewConn returns a Conn that reads f with read(2).
func NewConn(f PollFile) (*Conn, error) {
	return newConn(f, false, 0)
}

// NewSocket returns a Conn that reads the datagram socket f with
// recvmsg(2), with room for oobLen bytes of control messages.
func NewSocket(f PollFile, oobLen int) (*Conn, error) {
	return newConn(f, true, oobLen)
}

func newConn(f PollFile, socket bool, oobLen int) (*Conn, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("get raw descriptor: %w", err)
	}
	c := &Conn{f: f, rc: rc, socket: socket}
	if oobLen > 0 {
		c.oob = make([]byte, oobLen)
	}
	c.recv = c.receive
	return c, nil
}

// ReadInto makes one receive call into buf, waiting on the poller while
// the descriptor has nothing (after calling Drained).
func (c *Conn) ReadInto(buf []byte) (int, error) {
	c.buf, c.n, c.err = buf, 0, nil
	err := c.rc.Read(c.recv)
	c.buf = nil
	switch {
	case err == nil:
		return c.n, c.err
	case c.closed.Load() && !errors.Is(err, os.ErrDeadlineExceeded):
		return 0, os.ErrClosed // as *os.File's Read says it
	}
	return 0, err
}

func (c *Conn) receive(fd uintptr) bool {
	for {
		var err error
		if c.socket {
			var oobn int
			c.n, oobn, c.msg.Flags, c.msg.From, err = unix.Recvmsg(int(fd), c.buf, c.oob, 0)
			c.msg.Oob = c.oob[:oobn]
		} else {
			c.n, err = unix.Read(int(fd), c.buf)
		}
		switch err {
		case nil:
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			if c.Drained != nil {
				c.Drained()
			}
			return false
		}
		c.n, c.err = 0, err
		return true
	}
}

// Msg describes the datagram the last ReadInto of a socket returned.
func (c *Conn) Msg() Msg { return c.msg }

// SetReadDeadline sets the read deadline of the descriptor.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.f.SetReadDeadline(t) }

// Close closes the descriptor; a blocked ReadInto returns an error
// matching os.ErrClosed.
func (c *Conn) Close() error {
	c.closed.Store(true)
	return c.f.Close()
}
