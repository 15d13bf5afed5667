package mount

import (
	"errors"
	"os/user"
	"strconv"
	"strings"
	"sync"
)

// owners decides whose private area a mount point is in, for the
// policy's default (docs/policy.md): /run/user/<uid>/…, and
// /home/<user>/…, /media/<user>/…, /run/media/<user>/… for a user that
// exists. User names are looked up once and cached (a bounded cache: a
// hostile user can make many mount points, but not many user names).
type owners struct {
	mu     sync.Mutex
	byName map[string]nameUID
	// lookup returns a user's uid, an error matching
	// user.UnknownUserError when there is no such user, or another error
	// when the user database could not say (an NSS service down).
	lookup func(name string) (uint32, error)
}

type nameUID struct {
	uid uint32
	ok  bool
}

const maxOwnerCache = 4096

func newOwners() *owners {
	return &owners{byName: map[string]nameUID{}, lookup: lookupUser}
}

func lookupUser(name string) (uint32, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return 0, user.UnknownUserError(name) // no numeric uid: no user to keep it for
	}
	return uint32(n), nil
}

// of returns the uid whose private area path is in.
func (o *owners) of(path string) (uint32, bool) {
	if rest, ok := strings.CutPrefix(path, "/run/user/"); ok {
		first, _, _ := strings.Cut(rest, "/")
		n, err := strconv.ParseUint(first, 10, 32)
		if err != nil || first == "" || first[0] == '+' {
			return 0, false
		}
		return uint32(n), true
	}
	for _, pre := range []string{"/home/", "/media/", "/run/media/"} {
		rest, ok := strings.CutPrefix(path, pre)
		if !ok {
			continue
		}
		name, _, _ := strings.Cut(rest, "/")
		if name == "" {
			return 0, false
		}
		return o.user(name)
	}
	return 0, false
}

func (o *owners) user(name string) (uint32, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if v, ok := o.byName[name]; ok {
		return v.uid, v.ok
	}
	uid, err := o.lookup(name)
	var unknown user.UnknownUserError
	if err != nil && !errors.As(err, &unknown) {
		// The user database could not say: the area may be a user's, so
		// it is kept to administrators (uid ^0), and asked again next time.
		return ^uint32(0), true
	}
	if len(o.byName) >= maxOwnerCache {
		clear(o.byName)
	}
	o.byName[name] = nameUID{uid, err == nil}
	return uid, err == nil
}

// privateTo says whose private area an event about these paths concerns:
// none, one user, or several (then uid is ^uint32(0): administrators only).
func (o *owners) privateTo(paths ...string) (uid uint32, private bool) {
	for _, p := range paths {
		if p == "" {
			continue
		}
		u, ok := o.of(p)
		if !ok {
			continue
		}
		if private && u != uid {
			return ^uint32(0), true
		}
		uid, private = u, true
	}
	return uid, private
}

// PrivateTo says whose private area (docs/policy.md) a mount point is in,
// as the source's events say it (event.MountFields UID and Private), for
// readers of the mount table that run without the source
// (sources/superblock reading /proc/self/mountinfo once).
func PrivateTo(point string) (uid uint32, private bool) {
	return newOwners().privateTo(point)
}
