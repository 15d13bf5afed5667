package guest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/notifyd/notifyd/record"
)

// KeyctlQueue is the queue size "keyctl watch" sets (keyutils 1.6.3
// keyctl_watch.c: ioctl(fd, IOC_WATCH_QUEUE_SET_SIZE, MAX_MESSAGE_COUNT),
// 256); it has no option to change it.
const KeyctlQueue = 256

// keyWatchBuf is keyctl watch's read buffer ("unsigned char buffer[433]"):
// at most 27 key records per read(2).
const keyWatchBuf = 433

// Watching is the line KeyWatch writes first, once its watch is set: the
// one line keyctl watch does not write, so that a caller knows when the
// records start to count.
const Watching = "-- WATCHING --"

// EnvKeyWatch, when set in a test binary's environment to "KEY NOTES",
// makes [KeyWatchPeer] run [KeyWatch] on key with a queue of NOTES notes,
// writing to standard output, and exit.
const EnvKeyWatch = "NOTIFYD_KEYWATCH"

// KeyWatch does what keyutils' "keyctl watch KEY" does (keyctl_watch.c,
// 1.6.3), except that the queue size is notes instead of always
// KeyctlQueue: the same-size reference peer for a queue size keyctl cannot
// be set to. Like keyctl it opens a notification pipe (pipe2
// O_NOTIFICATION_PIPE|O_NONBLOCK), sets its size, installs no filter,
// watches key with watch id 1 (and writes the line Watching), then loops
// poll(POLLIN) + read(2) of at most
// 433 bytes, and writes one line per record to out, each with its own
// write(2) (keyctl's setlinebuf): "ID upd", "ID inst", "ID link AUX", …,
// "-- LOSS --" for a loss record and "ID gc" for a removal, after which,
// its watch being gone, it returns nil. A read of 0 bytes writes
// "-- END --" and returns nil. It returns an error where keyctl exits
// non-zero: a failed set-up, read or write, a short or bad record length.
func KeyWatch(key int32, notes int, out io.Writer) error {
	var p [2]int
	if err := unix.Pipe2(p[:], record.O_NOTIFICATION_PIPE|unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		return fmt.Errorf("open notification pipe: %w", err)
	}
	fd := p[0]
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	if err := unix.IoctlSetInt(fd, record.IocSetSize, notes); err != nil {
		return fmt.Errorf("set queue size %d: %w", notes, err)
	}
	if _, err := unix.KeyctlInt(record.KeyctlWatchKey, int(key), fd, 1, 0); err != nil {
		return fmt.Errorf("watch key %d: %w", key, err)
	}
	if _, err := io.WriteString(out, Watching+"\n"); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	buf := make([]byte, keyWatchBuf)
	line := make([]byte, 0, 64)
	for {
		pf := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		if _, err := unix.Poll(pf, -1); err != nil {
			if err == unix.EINTR {
				continue
			}
			return fmt.Errorf("poll: %w", err)
		}
		n, err := unix.Read(fd, buf)
		switch {
		case err == unix.EAGAIN || err == unix.EINTR:
			continue // keyctl would exit here; a spurious wake-up is no news
		case err != nil:
			return fmt.Errorf("read: %w", err)
		case n == 0:
			_, err := io.WriteString(out, "-- END --\n")
			return err
		}
		for b := buf[:n]; len(b) > 0; {
			h, err := record.ParseHeader(b)
			if err != nil {
				return fmt.Errorf("bad record: %w", err)
			}
			rec := b[:h.Len()]
			b = b[h.Len():]
			var done bool
			line, done = keyWatchLine(line[:0], h, rec)
			if len(line) > 0 {
				if _, err := out.Write(line); err != nil {
					return fmt.Errorf("write: %w", err)
				}
			}
			if done {
				return nil
			}
		}
	}
}

// keyWatchLine appends keyctl watch's line for one record to line
// (nothing for a record keyctl prints nothing for); done is set by a
// removal of watch 1, where keyctl exits.
func keyWatchLine(line []byte, h record.Header, rec []byte) ([]byte, bool) {
	switch h.Type {
	case record.TypeMeta:
		switch record.MetaSubtype(h.Subtype) {
		case record.MetaLoss:
			return append(line, "-- LOSS --\n"...), false
		case record.MetaRemoval:
			var id uint64
			if r, _, err := record.Decode(rec); err == nil {
				if rm, ok := r.(*record.Removal); ok && rm.HasID {
					id = rm.ID
				}
			}
			line = strconv.AppendUint(line, uint64(uint32(id)), 10)
			return append(line, " gc\n"...), h.WatchID() == 1
		}
	case record.TypeKey:
		k, _, err := record.DecodeKey(rec)
		if err != nil {
			return line, false // keyctl skips a key record of another length
		}
		line = strconv.AppendUint(line, uint64(uint32(k.KeyID)), 10)
		switch k.Subtype() {
		case record.KeyInstantiated:
			line = append(line, " inst"...)
		case record.KeyUpdated:
			line = append(line, " upd"...)
		case record.KeyLinked:
			line = strconv.AppendUint(append(line, " link "...), uint64(uint32(k.Aux)), 10)
		case record.KeyUnlinked:
			line = strconv.AppendUint(append(line, " unlk "...), uint64(uint32(k.Aux)), 10)
		case record.KeyCleared:
			line = append(line, " clr"...)
		case record.KeyRevoked:
			line = append(line, " rev"...)
		case record.KeyInvalidated:
			line = append(line, " inv"...)
		case record.KeySetattr:
			line = append(line, " attr"...)
		default:
			return line[:0], false
		}
		return append(line, '\n'), false
	}
	return line, false
}

// KeyWatchCommand returns a command that runs [KeyWatch] on key with a
// queue of notes notes in a process of its own, as keyctl watch runs: the
// calling test binary again, whose TestMain must call [KeyWatchPeer]
// first. Its standard output carries KeyWatch's lines.
func KeyWatchCommand(ctx context.Context, key int32, notes int) (*exec.Cmd, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own executable: %w", err)
	}
	cmd := exec.CommandContext(ctx, self)
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d %d", EnvKeyWatch, key, notes), "GOMAXPROCS=1")
	return cmd, nil
}

// KeyWatchPeer runs the process as the peer [KeyWatchCommand] starts
// when EnvKeyWatch is set, and exits (status 1 and the error on stderr
// when KeyWatch fails); otherwise it returns at once. Call it first in
// TestMain.
func KeyWatchPeer() {
	arg, ok := os.LookupEnv(EnvKeyWatch)
	if !ok {
		return
	}
	err := runKeyWatch(arg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "keywatch: %v\n", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func runKeyWatch(arg string) error {
	f := strings.Fields(arg)
	if len(f) != 2 {
		return errors.New(EnvKeyWatch + ": want KEY NOTES")
	}
	key, err := strconv.ParseInt(f[0], 10, 32)
	if err != nil {
		return fmt.Errorf("%s: key: %w", EnvKeyWatch, err)
	}
	notes, err := strconv.Atoi(f[1])
	if err != nil {
		return fmt.Errorf("%s: notes: %w", EnvKeyWatch, err)
	}
	return KeyWatch(int32(key), notes, os.Stdout)
}
