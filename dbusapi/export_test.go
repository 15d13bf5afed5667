package dbusapi

import (
	"github.com/godbus/dbus/v5"

	"github.com/notifyd/notifyd/api"
	"github.com/notifyd/notifyd/event"
)

// PreEncodedEvent returns the header (serial and body length to be
// patched, see AppendMessage) and body of the Event signal the service
// would send for ev on path to dest: what the benchmark's raw emitter
// writes.
func PreEncodedEvent(ev *event.Event, path dbus.ObjectPath, dest string) (hdr, body []byte, err error) {
	h, err := newSigHeader(path, api.DBusSubscriptionInterface, api.DBusSignalEvent, dest, sigEvent)
	if err != nil {
		return nil, nil, err
	}
	body, err = encodeBody(eventBody(ev))
	return h.b, body, err
}

// AppendMessage appends header hdr with serial and body length patched,
// then body.
func AppendMessage(dst, hdr []byte, serial uint32, body []byte) []byte {
	return sigHeader{b: hdr}.appendMessage(dst, serial, body)
}
