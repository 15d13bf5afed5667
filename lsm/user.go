package lsm

import (
	"fmt"
	"os/user"
	"strconv"
)

// UserCred returns the credentials of the user with this uid as the user
// database has them: the primary gid and the supplementary groups
// (os/user: /etc/passwd and /etc/group, or NSS with cgo). It is the
// subject of a client that has no process of its own to read credentials
// from — a browser session of that user, the configured identity of
// token-authenticated TCP clients — so PidFD is -1 and there is no label.
// A uid the database does not know is an error.
func UserCred(uid uint32) (*Cred, error) {
	u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10))
	if err != nil {
		return nil, fmt.Errorf("user %d: %w", uid, err)
	}
	return credOf(u)
}

// LookupUserCred is UserCred for a user name, or for a uid given as a
// decimal string.
func LookupUserCred(name string) (*Cred, error) {
	u, err := user.Lookup(name)
	if err != nil {
		var err2 error
		if u, err2 = user.LookupId(name); err2 != nil {
			return nil, fmt.Errorf("no such user %q", name)
		}
	}
	return credOf(u)
}

func credOf(u *user.User) (*Cred, error) {
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("user %s: uid %q", u.Username, u.Uid)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("user %s: gid %q", u.Username, u.Gid)
	}
	c := &Cred{UID: uint32(uid), GID: uint32(gid), PidFD: -1}
	if gs, err := u.GroupIds(); err == nil {
		for _, g := range gs {
			if n, err := strconv.ParseUint(g, 10, 32); err == nil && uint32(n) != c.GID {
				c.Groups = append(c.Groups, uint32(n))
			}
		}
	}
	return c, nil
}

// UserName is the name of the user with this uid, or the uid in decimal
// when the user database does not know it.
func UserName(uid uint32) string {
	s := strconv.FormatUint(uint64(uid), 10)
	if u, err := user.LookupId(s); err == nil && u.Username != "" {
		return u.Username
	}
	return s
}
