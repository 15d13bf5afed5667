package reopen

import (
	"context"
	"errors"
	"io"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// script is a Handle whose reads return the results it is given, then
// io.EOF.
type script struct {
	reads []result
}

type result struct {
	b   string
	err error
}

func (s *script) ReadInto(buf []byte) (int, error) {
	if len(s.reads) == 0 {
		return 0, io.EOF
	}
	r := s.reads[0]
	s.reads = s.reads[1:]
	return copy(buf, r.b), r.err
}

func (s *script) SetReadDeadline(time.Time) error { return nil }

// TestReadLoopErrors: the loop hands every read's bytes on (those read
// with an error too), retries EINTR and EAGAIN, lets Loss take the errors
// that are news, and ends on any other error, a Batch error or the end of
// the file, wrapped with What.
func TestReadLoopErrors(t *testing.T) {
	boom := errors.New("boom")
	for _, c := range []struct {
		name    string
		reads   []result
		batch   error
		want    []string
		wantErr error
		prefix  bool // the error is wrapped with What
		losses  int
		datagrm bool
	}{
		{name: "eof", reads: []result{{b: "a"}, {b: "bc"}}, want: []string{"a", "bc"}, wantErr: io.ErrUnexpectedEOF, prefix: true},
		{name: "zero read", reads: []result{{b: "a"}, {b: ""}}, want: []string{"a"}, wantErr: io.ErrUnexpectedEOF, prefix: true},
		{name: "empty datagram", reads: []result{{b: ""}, {b: "a"}}, want: []string{"", "a"}, wantErr: io.ErrUnexpectedEOF, prefix: true, datagrm: true},
		{name: "retried", reads: []result{{err: unix.EINTR}, {err: unix.EAGAIN}, {b: "a"}}, want: []string{"a"}, wantErr: io.ErrUnexpectedEOF, prefix: true},
		{name: "loss", reads: []result{{err: unix.EPIPE}, {b: "a"}, {err: unix.EPIPE}}, want: []string{"a"}, wantErr: io.ErrUnexpectedEOF, prefix: true, losses: 2},
		{name: "failure", reads: []result{{b: "a", err: unix.EIO}, {b: "b"}}, want: []string{"a"}, wantErr: unix.EIO, prefix: true},
		{name: "closed", reads: []result{{err: os.ErrClosed}}, wantErr: os.ErrClosed, prefix: true},
		{name: "batch error", reads: []result{{b: "a"}, {b: "b"}}, batch: boom, want: []string{"a"}, wantErr: boom},
	} {
		t.Run(c.name, func(t *testing.T) {
			var got []string
			losses := 0
			err := ReadLoop(context.Background(), &script{reads: c.reads}, make([]byte, 16), &Parse{
				What:      "read thing",
				Datagrams: c.datagrm,
				Batch: func(b []byte) error {
					got = append(got, string(b))
					return c.batch
				},
				Loss: func(err error) bool {
					if errors.Is(err, unix.EPIPE) {
						losses++
						return true
					}
					return false
				},
			})
			if !errors.Is(err, c.wantErr) || strings.HasPrefix(err.Error(), "read thing: ") != c.prefix {
				t.Errorf("ReadLoop = %v, want %v (wrapped with What: %v)", err, c.wantErr, c.prefix)
			}
			if !slices.Equal(got, c.want) || losses != c.losses {
				t.Errorf("batches %q, losses %d; want %q, %d", got, losses, c.want, c.losses)
			}
		})
	}
}

// TestConnPipe reads a real pipe through Conn: every write comes as one
// read, Drained runs before each wait, the end of the pipe ends the loop,
// and a cancelled context or a Close unblocks a waiting read.
func TestConnPipe(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewConn(r)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	drained := 0
	c.Drained = func() {
		drained++
		switch drained {
		case 1:
			w.Write([]byte("one"))
		case 2:
			w.Write([]byte("two"))
		default:
			w.Close()
		}
	}
	var got []string
	err = ReadLoop(context.Background(), c, make([]byte, 64), &Parse{What: "read pipe", Batch: func(b []byte) error {
		got = append(got, string(b))
		return nil
	}})
	if !errors.Is(err, io.ErrUnexpectedEOF) || !slices.Equal(got, []string{"one", "two"}) || drained != 3 {
		t.Fatalf("ReadLoop = %v after %q, drained %d times; want the end of the pipe after [one two], 3", err, got, drained)
	}

	for _, stop := range []string{"cancel", "close"} {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		c, err := NewConn(r)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		c.Drained = func() {
			if stop == "cancel" {
				cancel()
			} else {
				go c.Close() // Close waits for the read in progress
			}
		}
		err = ReadLoop(ctx, c, make([]byte, 64), &Parse{What: "read pipe", Batch: func([]byte) error { return nil }})
		cancel()
		c.Close()
		switch {
		case stop == "cancel" && !errors.Is(err, context.Canceled):
			t.Errorf("after cancel: ReadLoop = %v, want context.Canceled", err)
		case stop == "close" && (!errors.Is(err, os.ErrClosed) || !strings.HasPrefix(err.Error(), "read pipe: ")):
			t.Errorf("after close: ReadLoop = %v, want read pipe: …closed", err)
		}
	}
}

// TestConnSocket reads datagrams with recvmsg: an empty one is a
// datagram, and one longer than the buffer says MSG_TRUNC.
func TestConnSocket(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	peer := os.NewFile(uintptr(fds[1]), "peer")
	defer peer.Close()
	c, err := NewSocket(os.NewFile(uintptr(fds[0]), "socket"), 64)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, d := range []string{"abc", "", "0123456789"} {
		if _, err := peer.Write([]byte(d)); err != nil {
			t.Fatal(err)
		}
	}
	type dgram struct {
		b     string
		trunc bool
	}
	var got []dgram
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c.Drained = cancel
	err = ReadLoop(ctx, c, make([]byte, 4), &Parse{What: "receive", Datagrams: true, Batch: func(b []byte) error {
		m := c.Msg() // an unnamed socket pair: no sender address (netlink's: sources/uevent's tests)
		got = append(got, dgram{string(b), m.Flags&unix.MSG_TRUNC != 0})
		return nil
	}})
	want := []dgram{{"abc", false}, {"", false}, {"0123", true}}
	if !errors.Is(err, context.Canceled) || !slices.Equal(got, want) {
		t.Fatalf("ReadLoop = %v after %+v; want context.Canceled after %+v", err, got, want)
	}
}
