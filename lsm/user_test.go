package lsm_test

import (
	"os/user"
	"slices"
	"strconv"
	"testing"

	"github.com/notifyd/notifyd/lsm"
)

func TestUserCred(t *testing.T) {
	c, err := lsm.UserCred(0)
	if err != nil {
		t.Fatal(err)
	}
	if c.UID != 0 || c.GID != 0 || c.PidFD != -1 || c.Label != "" {
		t.Errorf("UserCred(0) = %+v", c)
	}
	if n := lsm.UserName(0); n != "root" {
		t.Errorf("UserName(0) = %q", n)
	}
	byName, err := lsm.LookupUserCred("root")
	if err != nil || byName.UID != 0 {
		t.Errorf("LookupUserCred(root) = %+v, %v", byName, err)
	}
	byID, err := lsm.LookupUserCred("0")
	if err != nil || byID.UID != 0 {
		t.Errorf("LookupUserCred(0) = %+v, %v", byID, err)
	}
	if _, err := lsm.UserCred(4000000000); err == nil {
		t.Errorf("UserCred of an unknown uid: no error")
	}
	if n := lsm.UserName(4000000000); n != "4000000000" {
		t.Errorf("UserName of an unknown uid = %q", n)
	}
	if _, err := lsm.LookupUserCred("no-such-user-notifyd"); err == nil {
		t.Errorf("LookupUserCred of an unknown name: no error")
	}

	// The groups are the user database's, as os/user reports them.
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Skip("no user nobody")
	}
	uid, _ := strconv.Atoi(u.Uid)
	c, err = lsm.UserCred(uint32(uid))
	if err != nil {
		t.Fatal(err)
	}
	gids, _ := u.GroupIds()
	for _, g := range gids {
		n, _ := strconv.Atoi(g)
		if !c.InGroup(uint32(n)) {
			t.Errorf("nobody's cred %+v lacks group %d", c, n)
		}
	}
	if slices.Contains(c.Groups, c.GID) {
		t.Errorf("primary gid repeated in Groups: %+v", c)
	}
}
