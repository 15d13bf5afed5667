package dbusapi

import (
	"errors"

	"github.com/godbus/dbus/v5"

	"github.com/notifyd/notifyd/api"
	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/filter"
	"github.com/notifyd/notifyd/lsm"
)

// watchAllowed applies the policy's watch hook to a subscription or a
// History call with filter f. A filter may select any source, so the
// target is every source; each event is then checked by allow.
func (sess *session) watchAllowed(o *owner, _ *filter.Filter) *dbus.Error {
	pol := sess.svc.cfg.Policy
	if pol == nil {
		return nil
	}
	if err := pol.Watch(o.cred, lsm.Target{}); err != nil {
		if errors.Is(err, lsm.ErrDenied) {
			return dbusErr(api.DBusErrorDenied, "%v", err)
		}
		return dbusErr(api.DBusErrorFailed, "policy: %v", err)
	}
	return nil
}

// allow returns the per-event post hook for owner o (nil: allow all).
func (sess *session) allow(o *owner) func(*event.Event) bool {
	pol := sess.svc.cfg.Policy
	if pol == nil {
		return nil
	}
	return pol.Allow(o.cred)
}
