package watchqueue

import (
	"fmt"
	"runtime"
	"sync"
	"unsafe"

	"github.com/notifyd/notifyd/record"
	"golang.org/x/sys/unix"
)

// probe caches a feature test once its answer is conclusive.
type probe struct {
	mu   sync.Mutex
	done bool
	err  error
}

func (p *probe) run(fn func() (error, bool)) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		return p.err
	}
	err, conclusive := fn()
	if conclusive {
		p.done, p.err = true, err
	}
	return err
}

var pipeProbe, keyProbe probe

// HaveNotificationPipe reports whether this kernel can create notification
// pipes: nil, or an error matching ErrNotSupported that names the reason
// ("CONFIG_WATCH_QUEUE is off in this kernel (ENOPKG)").
func HaveNotificationPipe() error {
	return pipeProbe.run(func() (error, bool) {
		var p [2]int
		err := unix.Pipe2(p[:], record.O_NOTIFICATION_PIPE|unix.O_CLOEXEC|unix.O_NONBLOCK)
		if err == nil {
			unix.Close(p[0])
			unix.Close(p[1])
			return nil, true
		}
		err = pipeErr(err)
		_, conclusive := err.(*notSupported)
		return fmt.Errorf("probe notification pipe: %w", err), conclusive
	})
}

// HaveKeyNotifications reports whether key watches work: notification
// pipes plus CONFIG_KEY_NOTIFICATIONS, asked with KEYCTL_CAPABILITIES
// (KEYCTL_CAPS1_NOTIFICATIONS).
func HaveKeyNotifications() error {
	if err := HaveNotificationPipe(); err != nil {
		return err
	}
	return keyProbe.run(func() (error, bool) {
		// keyctl(KEYCTL_CAPABILITIES, buffer, buflen): not the argument
		// order of unix.KeyctlBuffer.
		caps := make([]byte, 2)
		var err error
		if _, _, e := unix.Syscall(unix.SYS_KEYCTL, record.KeyctlCapabilities, uintptr(unsafe.Pointer(&caps[0])), uintptr(len(caps))); e != 0 {
			err = e
		}
		runtime.KeepAlive(caps)
		switch {
		case err == unix.EOPNOTSUPP || err == unix.ENOSYS:
			return fmt.Errorf("probe key notifications: %w", &notSupported{"this kernel has no KEYCTL_CAPABILITIES and so no key notifications", err.(unix.Errno)}), true
		case err != nil:
			return fmt.Errorf("probe key notifications: %w", err), false
		case caps[1]&record.KeyCaps1Notifications == 0:
			return fmt.Errorf("probe key notifications: %w", &notSupported{"CONFIG_KEY_NOTIFICATIONS is off in this kernel", unix.EOPNOTSUPP}), true
		}
		return nil, true
	})
}
