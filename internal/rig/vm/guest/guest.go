// Package guest is the inside of notifyd's VM test tier: helpers for tests
// that run in the qemu guest booted by package vmtest, whose kernel has
// watch_queue, key notifications, xHCI, scsi_debug, loop and device-mapper.
//
// A test calls [Active] (or uses testenv.KernelFeature) to find out whether
// it runs in the guest, then uses the host requests ([Hotplug], [Golden]),
// which travel over the guest /init's control socket and a dedicated serial
// port to the host harness, and the guest-local setup helpers
// ([ScsiDebugMediumError], [LoopAttach], [LoopOnDMError], [Keyctl]), and
// [KeyWatch], keyctl watch's loop with a settable queue size, the same-size
// peer of the key storm benchmark.
//
// The package is small on purpose and imports nothing from the host
// harness, so any test binary can use it.
package guest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

// Environment variables set by the guest /init for every test binary.
const (
	// EnvVM is "1" inside the VM (also read by internal/rig/testenv).
	EnvVM = "NOTIFYD_VM"
	// EnvControl is the path of /init's control socket.
	EnvControl = "NOTIFYD_VM_CONTROL"
)

// ErrNotInVM is returned by the host requests outside the VM.
var ErrNotInVM = errors.New("not running in the notifyd test VM")

// Active reports whether the caller runs inside the test VM.
func Active() bool { return os.Getenv(EnvVM) == "1" }

// Request is one request from a guest test to the host, sent as a JSON
// line to /init's control socket and relayed to the host.
type Request struct {
	// Op is "hotplug" or "golden".
	Op string `json:"op"`
	// Args are the operation's arguments (for hotplug: action, then
	// driver or id, then key=value options).
	Args []string `json:"args,omitempty"`
	// Data is the payload of a golden capture.
	Data []byte `json:"data,omitempty"`
}

// Reply is the host's answer to a Request; Error is empty on success.
type Reply struct {
	Error string `json:"error,omitempty"`
}

// Hotplug asks the host to plug or unplug a USB device on the guest's
// xHCI controller over QMP, and returns once qemu has done it (the guest
// still sees the uevents asynchronously).
//
//	Hotplug(ctx, "add", "usb-kbd", "id=kbd0")
//	Hotplug(ctx, "add", "usb-tablet", "id=tab0")
//	Hotplug(ctx, "add", "usb-storage", "id=stor0", "size=16M")  // host creates the image
//	Hotplug(ctx, "del", "kbd0")
//
// Extra key=value options are passed to device_add as properties
// (for example "usb_version=1").
func Hotplug(ctx context.Context, action string, args ...string) error {
	return Send(ctx, Request{Op: "hotplug", Args: append([]string{action}, args...)})
}

// Golden sends data captured from the guest kernel to the host, which
// keeps it in the run directory under name and, when asked to update
// goldens (go test ./internal/rig/vmtest -vm.update-golden), writes it to
// record/testdata/kernel-6.1/name.
func Golden(ctx context.Context, name string, data []byte) error {
	if strings.ContainsAny(name, "/\\ \n") || name == "" || strings.HasPrefix(name, ".") {
		return fmt.Errorf("golden name %q: want a plain file name", name)
	}
	return Send(ctx, Request{Op: "golden", Args: []string{name}, Data: data})
}

// Send sends one request to the host and waits for its reply.
func Send(ctx context.Context, req Request) error {
	path := os.Getenv(EnvControl)
	if !Active() || path == "" {
		return ErrNotInVM
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return fmt.Errorf("dial control socket: %w", err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	} else {
		c.SetDeadline(time.Now().Add(2 * time.Minute))
	}
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	b, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("encode request: %w", err)
	}
	if _, err := c.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("send request: %w", err)
	}
	line, err := bufio.NewReader(c).ReadBytes('\n')
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("read reply: %w", err)
	}
	var rep Reply
	if err := json.Unmarshal(line, &rep); err != nil {
		return fmt.Errorf("decode reply: %w", err)
	}
	if rep.Error != "" {
		return fmt.Errorf("%s %s: %s", req.Op, strings.Join(req.Args, " "), rep.Error)
	}
	return nil
}
