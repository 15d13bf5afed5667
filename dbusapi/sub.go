package dbusapi

import (
	"errors"
	"runtime"
	"strconv"
	"strings"
	"sync"

	"github.com/godbus/dbus/v5"

	"github.com/notifyd/notifyd/api"
	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/fanout"
	"github.com/notifyd/notifyd/subs"
)

// maxWrite bounds the bytes one write to the bus carries; a batch larger
// than this is written in several pieces (each a run of whole messages).
const maxWrite = 256 << 10

// smallBatch is the batch size below which the writer yields once before
// writing, so that events published back to back share a write (and the
// writer one wake-up) instead of costing one each.
const smallBatch = 16

// sub is one D-Bus subscription: its object, its fan-out queue and the
// writer goroutine that turns the queue into unicast signals.
type sub struct {
	sess     *session
	owner    *owner
	path     dbus.ObjectPath
	fs       *subs.Sub
	hello    fanout.Hello
	filter   string
	policy   string
	queueLen int
	evHdr    sigHeader
	lossHdr  sigHeader
	arena    bodyArena                 // the writer's, for signal bodies
	encode   func(*event.Event) []byte // arena.encode, bound once

	stop     chan struct{} // closed by end
	finished chan struct{} // closed when the writer has exited
	once     sync.Once
	reason   string
	notify   bool // send Ended(reason)
}

// newSub creates and registers a subscription for the caller of msg; the
// writer starts with start, after the reply.
func (sess *session) newSub(msg *dbus.Message, expr string, opts map[string]dbus.Variant) (*sub, *dbus.Error) {
	if _, err := subs.Compile(expr); err != nil {
		return nil, coreErr(err)
	}
	o, e := parseOptions(opts)
	if e != nil {
		return nil, e
	}
	sender, _ := msg.Headers[dbus.FieldSender].Value().(string)
	own, e := sess.ownerFor(sender)
	if e != nil {
		return nil, e
	}
	fs, err := own.cn.Subscribe(subs.Request{
		Filter:   expr,
		Policy:   o.policy,
		QueueLen: o.queueLen,
		Resume:   o.resume,
		Snapshot: o.snapshot,
	})
	if err != nil {
		return nil, coreErr(err)
	}
	hello := fs.Hello
	s := &sub{
		sess:     sess,
		owner:    own,
		path:     dbus.ObjectPath(api.DBusSubscriptionPrefix + "/" + strconv.FormatUint(fs.ID(), 10)),
		fs:       fs,
		hello:    hello,
		filter:   fs.Filter.String(),
		policy:   o.policyName,
		queueLen: fs.QueueLen,
		stop:     make(chan struct{}),
		finished: make(chan struct{}),
	}
	s.encode = s.arena.encode
	var err1, err2 error
	s.evHdr, err1 = newSigHeader(s.path, api.DBusSubscriptionInterface, api.DBusSignalEvent, sender, sigEvent)
	s.lossHdr, err2 = newSigHeader(s.path, api.DBusSubscriptionInterface, api.DBusSignalLoss, sender, sigLoss)
	if err := errors.Join(err1, err2); err != nil {
		fs.Close()
		return nil, dbusErr(api.DBusErrorFailed, "%v", err)
	}
	sess.mu.Lock()
	if sess.closing || sess.owners[own.name] != own {
		sess.mu.Unlock()
		fs.Close()
		return nil, dbusErr(api.DBusErrorCredentials, "caller left the bus")
	}
	sess.subs[s.path] = s
	own.subs[s] = struct{}{}
	sess.wg.Add(1)
	sess.mu.Unlock()
	return s, nil
}

// start runs the writer. The caller did sess.wg.Add(1) in newSub.
func (s *sub) start() {
	go func() {
		defer s.sess.wg.Done()
		s.run()
	}()
}

// end stops the subscription; with notify the writer sends Ended(reason)
// first. It does not wait (see finished).
func (s *sub) end(reason string, notify bool) {
	s.once.Do(func() {
		s.reason, s.notify = reason, notify
		close(s.stop)
	})
}

func (s *sub) signal(member string, body ...any) {
	msg := &dbus.Message{
		Type:  dbus.TypeSignal,
		Flags: dbus.FlagNoReplyExpected,
		Headers: map[dbus.HeaderField]dbus.Variant{
			dbus.FieldPath:        dbus.MakeVariant(s.path),
			dbus.FieldInterface:   dbus.MakeVariant(api.DBusSubscriptionInterface),
			dbus.FieldMember:      dbus.MakeVariant(member),
			dbus.FieldDestination: dbus.MakeVariant(s.owner.name),
			dbus.FieldSignature:   dbus.MakeVariant(dbus.SignatureOf(body...)),
		},
		Body: body,
	}
	s.sess.conn.Send(msg, nil)
}

// run is the writer goroutine.
func (s *sub) run() {
	defer close(s.finished)
	defer s.unregister()
	h := s.hello
	s.signal(api.DBusSignalStarted, h.Epoch, h.Seq, h.Resumed, h.Recovered, h.SnapshotSeq, uint32(len(h.Snapshot)))
	var buf []byte
	if len(h.Snapshot) > 0 {
		if buf = s.write(buf[:0], h.Snapshot); buf == nil {
			s.fs.Close()
			return
		}
	}
	batch := make([]*event.Event, 0, 256)
	for {
		select {
		case <-s.stop:
			s.fs.Close()
			if s.notify {
				s.signal(api.DBusSignalEnded, s.reason)
			}
			return
		case <-s.fs.Done():
			// Hand out what is left (the loss event that made a
			// Disconnect subscriber too slow, for one), then say why.
			batch = s.fs.Drain(batch[:0])
			s.write(buf[:0], batch)
			reason := "ended"
			if err := s.fs.Err(); err != nil {
				reason = err.Error()
			}
			s.signal(api.DBusSignalEnded, reason)
			s.fs.Close()
			return
		case <-s.fs.Ready():
		}
		batch = s.fs.Drain(batch[:0])
		if len(batch) < smallBatch {
			// Let a publisher that is still running add to the batch
			// before paying for a write and the next wake-up: a yield,
			// not a wait, so a lone event still goes out at once.
			runtime.Gosched()
			batch = s.fs.Drain(batch)
		}
		if buf = s.write(buf[:0], batch); buf == nil {
			s.fs.Close()
			return
		}
		clear(batch)
	}
}

// write sends evs as Event and Loss signals with as few writes as
// possible. It returns the buffer for reuse, nil when the connection
// failed.
func (s *sub) write(buf []byte, evs []*event.Event) []byte {
	conn := s.sess.conn
	for _, ev := range evs {
		body := ev.Encoded(event.EncodingDBusBody, s.encode)
		hdr := s.evHdr
		if ev.Loss != nil {
			hdr = s.lossHdr
		}
		buf = hdr.appendMessage(buf, s.sess.ser.GetSerial(), body)
		if len(buf) >= maxWrite {
			if _, err := conn.Write(buf); err != nil {
				return nil
			}
			s.sess.writes.Add(1)
			buf = buf[:0]
		}
	}
	if len(buf) > 0 {
		if _, err := conn.Write(buf); err != nil {
			return nil
		}
		s.sess.writes.Add(1)
	}
	s.sess.signals.Add(uint64(len(evs)))
	if buf == nil {
		buf = []byte{}
	}
	return buf[:0]
}

func (s *sub) unregister() {
	sess := s.sess
	sess.mu.Lock()
	delete(sess.subs, s.path)
	delete(s.owner.subs, s)
	sess.mu.Unlock()
}

// lookup returns the subscription at path if caller owns it.
func (sess *session) lookup(path dbus.ObjectPath, caller string) (*sub, *dbus.Error) {
	sess.mu.Lock()
	s := sess.subs[path]
	sess.mu.Unlock()
	if s == nil {
		return nil, dbusErr(errUnknownObject, "no subscription %s", path)
	}
	if s.owner.name != caller {
		return nil, dbusErr(api.DBusErrorNotOwner, "subscription %s belongs to another connection", path)
	}
	return s, nil
}

func msgPath(msg dbus.Message) dbus.ObjectPath {
	p, _ := msg.Headers[dbus.FieldPath].Value().(dbus.ObjectPath)
	return p
}

func msgSender(msg dbus.Message) string {
	s, _ := msg.Headers[dbus.FieldSender].Value().(string)
	return s
}

// cancel implements Subscription.Cancel: the writer sends Ended
// ("cancelled") and the object disappears.
func (sess *session) cancel(msg dbus.Message) *dbus.Error {
	s, e := sess.lookup(msgPath(msg), msgSender(msg))
	if e != nil {
		return e
	}
	s.end("cancelled", true)
	<-s.finished
	return nil
}

func (s *sub) props() map[string]dbus.Variant {
	st := s.fs.Stats()
	return map[string]dbus.Variant{
		"Owner":         dbus.MakeVariant(s.owner.name),
		"Filter":        dbus.MakeVariant(s.filter),
		"Policy":        dbus.MakeVariant(s.policy),
		"QueueLength":   dbus.MakeVariant(uint32(s.queueLen)),
		"QueueDepth":    dbus.MakeVariant(uint32(st.Queued)),
		"Delivered":     dbus.MakeVariant(st.Delivered),
		"Lost":          dbus.MakeVariant(st.Lost),
		"LossEvents":    dbus.MakeVariant(st.LossEvents),
		"Denied":        dbus.MakeVariant(st.Denied),
		"Sources":       dbus.MakeVariant(s.sources()),
		"DeniedSources": dbus.MakeVariant(s.deniedSources()),
	}
}

func (s *sub) sources() []string {
	out := make([]string, 0, len(s.fs.Sources))
	for _, src := range s.fs.Sources {
		out = append(out, string(src))
	}
	return out
}

// deniedSource is one element of DeniedSources (signature (ss)).
type deniedSource struct {
	Source, Reason string
}

func (s *sub) deniedSources() []deniedSource {
	out := make([]deniedSource, 0, len(s.fs.Denied))
	for _, d := range s.fs.Denied {
		out = append(out, deniedSource{string(d.Source), d.Reason})
	}
	return out
}

func (sess *session) subGet(msg dbus.Message, iface, name string) (dbus.Variant, *dbus.Error) {
	s, e := sess.lookup(msgPath(msg), msgSender(msg))
	if e != nil {
		return dbus.Variant{}, e
	}
	if iface != api.DBusSubscriptionInterface {
		return dbus.Variant{}, dbusErr(errUnknownIface, "no interface %q here", iface)
	}
	v, ok := s.props()[name]
	if !ok {
		return dbus.Variant{}, dbusErr(errUnknownProperty, "no property %q", name)
	}
	return v, nil
}

func (sess *session) subGetAll(msg dbus.Message, iface string) (map[string]dbus.Variant, *dbus.Error) {
	s, e := sess.lookup(msgPath(msg), msgSender(msg))
	if e != nil {
		return nil, e
	}
	if iface != api.DBusSubscriptionInterface && iface != "" {
		return map[string]dbus.Variant{}, nil
	}
	return s.props(), nil
}

// subIntrospect describes a subscription object, or lists the caller's
// own subscriptions on the parent path.
func (sess *session) subIntrospect(msg dbus.Message) (string, *dbus.Error) {
	path := msgPath(msg)
	if path == api.DBusSubscriptionPrefix {
		caller := msgSender(msg)
		var kids []string
		sess.mu.Lock()
		for p, s := range sess.subs {
			if s.owner.name == caller {
				kids = append(kids, strings.TrimPrefix(string(p), api.DBusSubscriptionPrefix+"/"))
			}
		}
		sess.mu.Unlock()
		return parentXML(kids), nil
	}
	sess.mu.Lock()
	_, ok := sess.subs[path]
	sess.mu.Unlock()
	if !ok {
		return "", dbusErr(errUnknownObject, "no subscription %s", path)
	}
	return subscriptionXML, nil
}
