package ctl

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/notifyd/notifyd/api"
)

var cmdWatchKey = &command{
	name:  "watch-key",
	args:  "KEY [--tag N] [--keep] [--json]",
	short: "watch a key or keyring with your own rights and stream its events",
	long: `
KEY is a key serial (decimal or 0x hex) or a special keyring: @s (session),
@u (user), @us (user session), @p (process), @t (thread).

The daemon hands notifyctl the write end of a notification pipe that only
this client's subscription reads; notifyctl itself calls
keyctl(KEYCTL_WATCH_KEY) on it, so the kernel checks your own permission to
view the key, and then streams what the daemon reads from the pipe.

Without --keep the watch ends when notifyctl exits. With --keep it stays
(the daemon keeps reading into its history) until "notifyctl unwatch-key";
the owner token is saved in $XDG_STATE_HOME/notifyctl/key-watch-owner, and
later watch-key --keep calls add to the same pipe.

Needs a kernel with CONFIG_KEY_NOTIFICATIONS and CONFIG_WATCH_QUEUE.`,
	examples: []string{
		`notifyctl watch-key @s`,
		`notifyctl watch-key @u --tag 7 --json`,
		`notifyctl watch-key 0x1a2b3c4d --keep   # then: notifyctl unwatch-key 0x1a2b3c4d`,
	},
	flags: func(fs *flag.FlagSet, o *opts) {
		fs.IntVar(&o.tag, "tag", 0, "watch tag 0..255 carried by this watch's records")
		fs.BoolVar(&o.keep, "keep", false, "keep the watch after notifyctl exits")
		fs.BoolVar(&o.json, "json", false, "print NDJSON")
		fs.IntVar(&o.count, "count", 0, "exit after this many events")
		fs.BoolVar(&o.noColor, "no-color", false, "never colour loss lines")
	},
	run: runWatchKey,
}

var cmdUnwatchKey = &command{
	name:  "unwatch-key",
	args:  "KEY | --all [--owner TOKEN]",
	short: "remove a key watch kept with watch-key --keep",
	examples: []string{
		`notifyctl unwatch-key @s`,
		`notifyctl unwatch-key --all      # drop the pipe and every watch on it`,
	},
	flags: func(fs *flag.FlagSet, o *opts) {
		fs.StringVar(&o.owner, "owner", "", "owner token (default: the one watch-key --keep saved)")
		fs.BoolVar(&o.all, "all", false, "end the whole attachment: every watch on the pipe")
	},
	run: runUnwatchKey,
}

// ParseKey parses a key serial or a special keyring name.
func ParseKey(s string) (int32, error) {
	switch s {
	case "@t":
		return unix.KEY_SPEC_THREAD_KEYRING, nil
	case "@p":
		return unix.KEY_SPEC_PROCESS_KEYRING, nil
	case "@s":
		return unix.KEY_SPEC_SESSION_KEYRING, nil
	case "@u":
		return unix.KEY_SPEC_USER_KEYRING, nil
	case "@us":
		return unix.KEY_SPEC_USER_SESSION_KEYRING, nil
	}
	v, err := strconv.ParseInt(s, 0, 32)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("bad key %q: want a serial or one of @s @u @us @p @t", s)
	}
	return int32(v), nil
}

// attachKeyWatch gets the notification pipe's write end from the daemon.
func attachKeyWatch(ctx context.Context, e Endpoint, owner string, keep bool) (*api.KeyWatchReply, int, error) {
	q := url.Values{}
	if owner != "" {
		q.Set(api.ParamOwner, owner)
	}
	if keep {
		q.Set(api.ParamKeep, "1")
	}
	body, fds, err := FetchFD(ctx, e, api.PathKeyWatch, q)
	if err != nil {
		return nil, -1, err
	}
	var rep api.KeyWatchReply
	if err := json.Unmarshal(body, &rep); err != nil || len(fds) != 1 {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return nil, -1, fmt.Errorf("key watch: bad answer (%d fds): %v", len(fds), err)
	}
	return &rep, fds[0], nil
}

// WatchKey calls keyctl(KEYCTL_WATCH_KEY, key, fd, tag); tag -1 removes.
func WatchKey(key int32, fd int, tag int) error {
	_, err := unix.KeyctlInt(unix.KEYCTL_WATCH_KEY, int(key), fd, tag, 0)
	if err == nil {
		return nil
	}
	what := "watch key"
	if tag < 0 {
		what = "unwatch key"
	}
	switch {
	case errors.Is(err, unix.EOPNOTSUPP):
		return fmt.Errorf("%s: this kernel has no key notifications (CONFIG_KEY_NOTIFICATIONS): %w", what, err)
	case errors.Is(err, unix.EBUSY):
		return fmt.Errorf("%s: already watched on this pipe: %w", what, err)
	case errors.Is(err, unix.EBADSLT):
		return fmt.Errorf("%s: no such watch on this pipe: %w", what, err)
	case errors.Is(err, unix.EACCES), errors.Is(err, unix.ENOKEY):
		return fmt.Errorf("%s: key not found or you may not view it: %w", what, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

func runWatchKey(ctx context.Context, o *opts, args []string) error {
	if len(args) != 1 {
		return usage("watch-key: one KEY argument expected")
	}
	key, err := ParseKey(args[0])
	if err != nil {
		return usage("watch-key: %v", err)
	}
	if o.tag < 0 || o.tag > 255 {
		return usage("watch-key: --tag wants 0..255")
	}
	ownerPath := statePath("key-watch-owner")
	saved := ""
	if o.keep {
		if b, err := os.ReadFile(ownerPath); err == nil {
			saved = strings.TrimSpace(string(b))
		}
	}
	rep, fd, err := attachKeyWatch(ctx, o.ep, saved, o.keep)
	if err != nil && saved != "" {
		// The saved attachment is gone (daemon restart): make a new one.
		rep, fd, err = attachKeyWatch(ctx, o.ep, "", o.keep)
	}
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	serial := key
	if key < 0 {
		if id, err := unix.KeyctlGetKeyringID(int(key), false); err == nil {
			serial = int32(id)
		}
	}
	if err := WatchKey(key, fd, o.tag); err != nil {
		return err
	}
	if o.keep {
		if err := writeState(ownerPath, rep.Owner); err != nil {
			return err
		}
	} else {
		defer WatchKey(key, fd, -1)
	}
	req, err := o.request(nil)
	if err != nil {
		return err
	}
	req.Owner = rep.Owner
	req.Filter = fmt.Sprintf("owner == %q && tag == %d", rep.Owner, o.tag)
	m := newMonitor(o, req)
	if !o.json {
		m.onHello = func(h *api.Hello) {
			m.p.note("watching key %d (%s) with tag %d through your own notification pipe", serial, args[0], o.tag)
		}
	}
	return m.run(ctx)
}

func runUnwatchKey(ctx context.Context, o *opts, args []string) error {
	ownerPath := statePath("key-watch-owner")
	owner := o.owner
	if owner == "" {
		b, err := os.ReadFile(ownerPath)
		if err != nil {
			return usage("unwatch-key: no kept key watch (watch-key --keep saves one in %s), and no --owner", ownerPath)
		}
		owner = strings.TrimSpace(string(b))
	}
	if o.all {
		if len(args) != 0 {
			return usage("unwatch-key: --all takes no KEY")
		}
		if err := post(ctx, o.ep, api.PathDetach, url.Values{api.ParamOwner: {owner}}); err != nil {
			return err
		}
		if o.owner == "" {
			os.Remove(ownerPath)
		}
		return nil
	}
	if len(args) != 1 {
		return usage("unwatch-key: one KEY argument expected (or --all)")
	}
	key, err := ParseKey(args[0])
	if err != nil {
		return usage("unwatch-key: %v", err)
	}
	_, fd, err := attachKeyWatch(ctx, o.ep, owner, false)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return WatchKey(key, fd, -1)
}
