package watchqueue

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/notifyd/notifyd/internal/feature"
)

// ErrNotSupported is matched (errors.Is) by every error that means "this
// kernel cannot do it": CONFIG_WATCH_QUEUE off (ENOPKG), a kernel older
// than 5.8 (EINVAL from pipe2), CONFIG_KEY_NOTIFICATIONS off (EOPNOTSUPP).
// Such errors also unwrap to the errno. It is feature.ErrNotSupported, the
// one sentinel shared by every layer.
var ErrNotSupported = feature.ErrNotSupported

// notSupported is an error that Is ErrNotSupported and unwraps to its errno.
type notSupported struct {
	reason string
	errno  unix.Errno
}

func (e *notSupported) Error() string {
	return fmt.Sprintf("%s (%s)", e.reason, unix.ErrnoName(e.errno))
}
func (e *notSupported) Is(target error) bool { return target == ErrNotSupported }
func (e *notSupported) Unwrap() error        { return e.errno }

// pipeErr maps a pipe2(O_NOTIFICATION_PIPE) failure.
func pipeErr(err error) error {
	switch err {
	case unix.ENOPKG:
		return &notSupported{"CONFIG_WATCH_QUEUE is off in this kernel", unix.ENOPKG}
	case unix.EINVAL:
		return &notSupported{"this kernel has no notification pipes (Linux 5.8 or newer with CONFIG_WATCH_QUEUE needed)", unix.EINVAL}
	}
	return err
}

// KeyError is returned by WatchKey and UnwatchKey. It unwraps to the errno,
// so errors.Is(err, unix.EBUSY) works.
type KeyError struct {
	Op    string // "watch key" or "unwatch key"
	Key   int32
	Errno unix.Errno
}

func (e *KeyError) Error() string {
	var why string
	switch e.Errno {
	case unix.EBUSY:
		why = "this queue already watches the key"
	case unix.EAGAIN:
		why = "the user's watches would exceed RLIMIT_NOFILE"
	case unix.EBADSLT:
		why = "this queue does not watch the key"
	case unix.EACCES:
		why = "no View permission on the key"
	case unix.ENOKEY:
		why = "no such key"
	case unix.EKEYREVOKED:
		why = "the key was revoked"
	case unix.EKEYEXPIRED:
		why = "the key expired"
	case unix.EINVAL:
		why = "invalid tag or not a notification pipe"
	default:
		why = e.Errno.Error()
	}
	return fmt.Sprintf("%s %d: %s (%s)", e.Op, e.Key, why, unix.ErrnoName(e.Errno))
}

func (e *KeyError) Unwrap() error { return e.Errno }

// keyErr maps a KEYCTL_WATCH_KEY failure.
func keyErr(op string, key int32, err error) error {
	errno, ok := err.(unix.Errno)
	if !ok {
		return fmt.Errorf("%s %d: %w", op, key, err)
	}
	if errno == unix.EOPNOTSUPP {
		return fmt.Errorf("%s %d: %w", op, key, &notSupported{"CONFIG_KEY_NOTIFICATIONS is off in this kernel", unix.EOPNOTSUPP})
	}
	return &KeyError{Op: op, Key: key, Errno: errno}
}
