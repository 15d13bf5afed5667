package dbusapi

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/notifyd/notifyd/api"
	"github.com/notifyd/notifyd/subs"
)

const (
	ifaceProperties    = "org.freedesktop.DBus.Properties"
	ifaceIntrospect    = "org.freedesktop.DBus.Introspectable"
	busName            = "org.freedesktop.DBus"
	busPath            = dbus.ObjectPath("/org/freedesktop/DBus")
	errUnknownObject   = "org.freedesktop.DBus.Error.UnknownObject"
	errUnknownIface    = "org.freedesktop.DBus.Error.UnknownInterface"
	errUnknownProperty = "org.freedesktop.DBus.Error.UnknownProperty"
	errReadOnly        = "org.freedesktop.DBus.Error.PropertyReadOnly"
)

// manualReply lists the manager methods that send their own reply, so
// that the reply can carry fds the service closes right after sending,
// and so that a subscription's first signal follows Subscribe's reply.
// The value is the method's input signature: a call with another one is
// left to godbus, which answers it with InvalidArgs.
var manualReply = map[string]string{
	api.DBusMethodSubscribe:      "sa{sv}",
	api.DBusMethodHistory:        "ts",
	api.DBusMethodAttachKeyWatch: "",
}

type replyKey struct {
	sender string
	serial uint32
}

// session is one connection to the bus. Everything it holds ends with it:
// subscribers are peers on that bus, and their unique names die with it.
type session struct {
	svc  *Service
	conn *dbus.Conn
	ser  *serials
	gen  uint64
	sigs chan *dbus.Signal
	objs *objects // device objects (ObjectManager)

	replies sync.Map // replyKey -> struct{}: calls whose reply we send

	// Event and Loss signals written by the subscriptions' writers, and
	// the writes that carried them.
	signals, writes atomic.Uint64

	mu      sync.Mutex
	closing bool
	owners  map[string]*owner // by unique name
	opening map[string]*pendingOwner
	subs    map[dbus.ObjectPath]*sub
	wg      sync.WaitGroup // writers, watchers, handlers, loops
}

// owner is one client connection with live subscriptions or key watches:
// a connection of the subscription core.
type owner struct {
	name string     // unique bus name
	cn   *subs.Conn // closed when the owner goes
	subs map[*sub]struct{}
}

func (s *Service) connect(ctx context.Context, addr string) (*session, error) {
	sess := &session{
		svc:    s,
		ser:    &serials{},
		gen:    s.gen.Add(1),
		sigs:   make(chan *dbus.Signal, 256),
		owners: map[string]*owner{}, opening: map[string]*pendingOwner{},
		subs: map[dbus.ObjectPath]*sub{},
	}
	sess.objs = newObjects(sess)
	conn, err := dbus.Connect(addr,
		dbus.WithContext(ctx),
		dbus.WithSerialGenerator(sess.ser),
		dbus.WithSignalHandler(dbus.NewSequentialSignalHandler()),
		dbus.WithIncomingInterceptor(sess.intercept))
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", addr, err)
	}
	sess.conn = conn
	if err := sess.export(); err != nil {
		conn.Close()
		return nil, err
	}
	conn.Signal(sess.sigs)
	if err := conn.AddMatchSignal(
		dbus.WithMatchSender(busName),
		dbus.WithMatchInterface(busName),
		dbus.WithMatchMember("NameOwnerChanged"),
		dbus.WithMatchArg(2, "")); err != nil {
		conn.Close()
		return nil, fmt.Errorf("add NameOwnerChanged match: %w", err)
	}
	reply, err := conn.RequestName(api.DBusName, dbus.NameFlagDoNotQueue)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("request name %s: %w", api.DBusName, err)
	}
	if reply != dbus.RequestNameReplyPrimaryOwner && reply != dbus.RequestNameReplyAlreadyOwner {
		conn.Close()
		return nil, fmt.Errorf("request name %s: %s (another process owns it)", api.DBusName, reply)
	}
	return sess, nil
}

// intercept runs on godbus's reader goroutine for every incoming message.
// For the manual-reply methods it takes over the reply (see manualReply).
func (sess *session) intercept(msg *dbus.Message) {
	if msg.Type != dbus.TypeMethodCall || msg.Flags&dbus.FlagNoReplyExpected != 0 {
		return
	}
	path, _ := msg.Headers[dbus.FieldPath].Value().(dbus.ObjectPath)
	member, _ := msg.Headers[dbus.FieldMember].Value().(string)
	iface, _ := msg.Headers[dbus.FieldInterface].Value().(string)
	sender, _ := msg.Headers[dbus.FieldSender].Value().(string)
	if path != api.DBusPath {
		return
	}
	var want string
	var ok bool
	switch iface {
	case api.DBusManagerInterface:
		want, ok = manualReply[member]
	case api.DBusObjectManagerInterface:
		want, ok = "", member == api.DBusMethodGetManagedObjects
	case "":
		// The interface is optional; godbus then finds the method by
		// member, among every interface of the path.
		if want, ok = manualReply[member]; !ok {
			want, ok = "", member == api.DBusMethodGetManagedObjects
		}
	}
	sig, _ := msg.Headers[dbus.FieldSignature].Value().(dbus.Signature)
	if !ok || sig.String() != want {
		return
	}
	msg.Flags |= dbus.FlagNoReplyExpected
	sess.replies.Store(replyKey{sender, msg.Serial()}, struct{}{})
}

// reply sends the reply (or, with e != nil, the error) to a manual-reply
// call, if the caller wanted one. It returns when the message is written.
func (sess *session) reply(msg *dbus.Message, e *dbus.Error, body ...any) {
	sender, _ := msg.Headers[dbus.FieldSender].Value().(string)
	if _, ok := sess.replies.LoadAndDelete(replyKey{sender, msg.Serial()}); !ok {
		return
	}
	out := &dbus.Message{Headers: map[dbus.HeaderField]dbus.Variant{
		dbus.FieldDestination: dbus.MakeVariant(sender),
		dbus.FieldReplySerial: dbus.MakeVariant(msg.Serial()),
	}}
	if e != nil {
		out.Type = dbus.TypeError
		out.Headers[dbus.FieldErrorName] = dbus.MakeVariant(e.Name)
		body = e.Body
	} else {
		out.Type = dbus.TypeMethodReply
	}
	out.Body = body
	if len(body) > 0 {
		out.Headers[dbus.FieldSignature] = dbus.MakeVariant(dbus.SignatureOf(body...))
	}
	sess.conn.Send(out, nil)
}

// enter registers an in-flight method call; false when the session is
// closing (the call is then answered with an error by the caller).
func (sess *session) enter() bool {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	if sess.closing {
		return false
	}
	sess.wg.Add(1)
	return true
}

func (sess *session) leave() { sess.wg.Done() }

func (sess *session) count() int {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	return len(sess.subs)
}

// serve runs the session until the connection ends (bus gone or ctx
// done), then ends every subscription and waits for every goroutine.
func (sess *session) serve(ctx context.Context) {
	sess.wg.Add(3)
	go func() {
		defer sess.wg.Done()
		sess.signalLoop()
	}()
	go func() {
		defer sess.wg.Done()
		sess.objs.run()
	}()
	go func() {
		defer sess.wg.Done()
		sess.statusLoop()
	}()
	<-sess.conn.Context().Done()
	sess.shutdown()
}

func (sess *session) shutdown() {
	sess.mu.Lock()
	sess.closing = true
	owners := make([]*owner, 0, len(sess.owners))
	for _, o := range sess.owners {
		owners = append(owners, o)
	}
	sess.mu.Unlock()
	for _, o := range owners {
		sess.ownerGone(o.name, "bus connection lost")
	}
	sess.conn.Close()
	sess.wg.Wait()
}

// signalLoop watches NameOwnerChanged for departing clients. The channel
// is closed when the connection closes.
//
// Only the bus itself says who left: any peer may send us a unicast
// signal (the system bus policy allows signals, and a unicast signal
// bypasses match rules), so one dressed as NameOwnerChanged from another
// sender would otherwise end a victim's subscriptions.
func (sess *session) signalLoop() {
	for sig := range sess.sigs {
		if sig.Sender != busName || sig.Path != busPath || sig.Name != busName+".NameOwnerChanged" || len(sig.Body) != 3 {
			continue
		}
		name, _ := sig.Body[0].(string)
		newOwner, _ := sig.Body[2].(string)
		if newOwner == "" && strings.HasPrefix(name, ":") {
			sess.ownerGone(name, "owner left the bus")
		}
	}
}

// statusLoop emits PropertiesChanged for the manager's Status properties,
// at most once per StatusInterval and only when something changed.
func (sess *session) statusLoop() {
	t := time.NewTicker(sess.svc.cfg.StatusInterval)
	defer t.Stop()
	last := sess.managerProps()
	for {
		select {
		case <-sess.conn.Context().Done():
			return
		case <-t.C:
		}
		now := sess.managerProps()
		changed := map[string]dbus.Variant{}
		for k, v := range now {
			if old, ok := last[k]; !ok || old.Value() != v.Value() {
				changed[k] = v
			}
		}
		if len(changed) == 0 {
			continue
		}
		last = now
		sess.conn.Emit(api.DBusPath, ifaceProperties+".PropertiesChanged",
			api.DBusManagerInterface, changed, []string{})
	}
}

// ownerFor returns the owner record of sender, opening its core
// connection (credentials from the bus) on first use.
func (sess *session) ownerFor(sender string) (*owner, *dbus.Error) {
	sess.mu.Lock()
	if o := sess.owners[sender]; o != nil {
		sess.mu.Unlock()
		return o, nil
	}
	// One caller's first calls may arrive together (a client firing
	// many calls at once): they share one admission, so that one peer is
	// one connection of the core, never several that its per-user limit
	// would refuse.
	if p := sess.opening[sender]; p != nil {
		sess.mu.Unlock()
		<-p.done
		return p.o, p.err
	}
	p := &pendingOwner{done: make(chan struct{})}
	sess.opening[sender] = p
	sess.mu.Unlock()
	p.o, p.err = sess.openOwner(sender)
	sess.mu.Lock()
	delete(sess.opening, sender)
	sess.mu.Unlock()
	close(p.done)
	return p.o, p.err
}

// pendingOwner is an admission in progress for a sender.
type pendingOwner struct {
	done chan struct{}
	o    *owner
	err  *dbus.Error
}

// openOwner admits sender to the core and registers it (ownerFor).
func (sess *session) openOwner(sender string) (*owner, *dbus.Error) {
	cred, err := sess.credentials(sender)
	if err != nil {
		return nil, dbus.NewError(api.DBusErrorCredentials, []any{err.Error()})
	}
	cn, err := sess.svc.cfg.Core.Open(subs.Peer{
		Cred:      cred,
		Transport: "dbus",
		Label:     fmt.Sprintf("dbus %s uid=%d pid=%d", sender, cred.UID, cred.PID),
		OnEnd:     func(reason error) { sess.ownerGone(sender, reason.Error()) },
	})
	if err != nil {
		return nil, coreErr(err)
	}
	sess.mu.Lock()
	if sess.closing {
		sess.mu.Unlock()
		cn.Close()
		return nil, dbus.NewError(api.DBusErrorFailed, []any{"service is shutting down"})
	}
	if o := sess.owners[sender]; o != nil {
		sess.mu.Unlock()
		cn.Close()
		return o, nil
	}
	o := &owner{name: sender, cn: cn, subs: map[*sub]struct{}{}}
	sess.owners[sender] = o
	sess.mu.Unlock()
	// The owner may have left before we registered it; then no
	// NameOwnerChanged will come for it any more.
	var has bool
	if err := sess.conn.BusObject().Call(busName+".NameHasOwner", 0, sender).Store(&has); err == nil && !has {
		sess.ownerGone(sender, "owner left the bus")
		return nil, dbus.NewError(api.DBusErrorCredentials, []any{"caller left the bus"})
	}
	return o, nil
}

// ownerGone ends everything owner name had: subscriptions (without an
// Ended signal: nobody is there to read it), key watches, credentials.
func (sess *session) ownerGone(name, reason string) {
	sess.mu.Lock()
	o := sess.owners[name]
	if o == nil {
		sess.mu.Unlock()
		return
	}
	delete(sess.owners, name)
	list := make([]*sub, 0, len(o.subs))
	for s := range o.subs {
		list = append(list, s)
	}
	sess.mu.Unlock()
	for _, s := range list {
		s.end(reason, false)
	}
	for _, s := range list {
		<-s.finished
	}
	o.cn.Close() // every subscription and key watch of the owner ends
}
