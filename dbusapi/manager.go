package dbusapi

import (
	"fmt"

	"github.com/godbus/dbus/v5"

	"github.com/notifyd/notifyd/api"
	"github.com/notifyd/notifyd/eventrec"
	"github.com/notifyd/notifyd/fanout"
	"github.com/notifyd/notifyd/history"
	"github.com/notifyd/notifyd/subs"
)

// sourceInfo is one element of Sources() (signature (sssasssttt)).
type sourceInfo struct {
	Name      string
	Source    string
	State     string
	Origins   []string
	Reason    string
	Errno     string
	SinceUsec uint64
	Events    uint64
	Losses    uint64
}

func (sess *session) export() error {
	c := sess.conn
	mgr := map[string]any{
		api.DBusMethodSubscribe:      sess.subscribe,
		api.DBusMethodSources:        sess.sources,
		api.DBusMethodHistory:        sess.history,
		api.DBusMethodAttachKeyWatch: sess.attachKeyWatch,
	}
	props := map[string]any{
		"Get":    sess.managerGet,
		"GetAll": sess.managerGetAll,
		"Set":    propSet,
	}
	intro := map[string]any{
		"Introspect": func() (string, *dbus.Error) { return managerXML, nil },
	}
	subM := map[string]any{api.DBusMethodCancel: sess.cancel}
	subProps := map[string]any{
		"Get":    sess.subGet,
		"GetAll": sess.subGetAll,
		"Set":    propSet,
	}
	subIntro := map[string]any{"Introspect": sess.subIntrospect}
	objMgr := map[string]any{api.DBusMethodGetManagedObjects: sess.getManagedObjects}
	devProps := map[string]any{
		"Get":    sess.devGet,
		"GetAll": sess.devGetAll,
		"Set":    sess.devSet,
	}
	devIntro := map[string]any{"Introspect": sess.devIntrospect}
	for _, e := range []struct {
		m       map[string]any
		path    dbus.ObjectPath
		iface   string
		subtree bool
	}{
		{mgr, api.DBusPath, api.DBusManagerInterface, false},
		{props, api.DBusPath, ifaceProperties, false},
		{intro, api.DBusPath, ifaceIntrospect, false},
		{subM, api.DBusSubscriptionPrefix, api.DBusSubscriptionInterface, true},
		{subProps, api.DBusSubscriptionPrefix, ifaceProperties, true},
		{subIntro, api.DBusSubscriptionPrefix, ifaceIntrospect, true},
		{objMgr, api.DBusPath, api.DBusObjectManagerInterface, false},
		{devProps, api.DBusDevicesPrefix, ifaceProperties, true},
		{devIntro, api.DBusDevicesPrefix, ifaceIntrospect, true},
	} {
		var err error
		if e.subtree {
			err = c.ExportSubtreeMethodTable(e.m, e.path, e.iface)
		} else {
			err = c.ExportMethodTable(e.m, e.path, e.iface)
		}
		if err != nil {
			return fmt.Errorf("export %s on %s: %w", e.iface, e.path, err)
		}
	}
	return nil
}

func dbusErr(name, format string, args ...any) *dbus.Error {
	return dbus.NewError(name, []any{fmt.Sprintf(format, args...)})
}

// subOptions is the decoded Subscribe option dictionary.
type subOptions struct {
	resume     *fanout.Position
	snapshot   bool
	policy     fanout.Policy
	policyName string
	queueLen   int
}

func parseOptions(opts map[string]dbus.Variant) (subOptions, *dbus.Error) {
	o := subOptions{policy: fanout.DropOldest, policyName: api.DBusPolicyDropOldest}
	var epoch, seq *uint64
	for k, v := range opts {
		bad := func(want string) *dbus.Error {
			return dbusErr(api.DBusErrorBadOption, "option %q: want type %s, got %s", k, want, v.Signature())
		}
		switch k {
		case api.DBusOptResumeEpoch, api.DBusOptResumeSeq:
			x, ok := v.Value().(uint64)
			if !ok {
				return o, bad("t")
			}
			if k == api.DBusOptResumeEpoch {
				epoch = &x
			} else {
				seq = &x
			}
		case api.DBusOptSnapshot:
			b, ok := v.Value().(bool)
			if !ok {
				return o, bad("b")
			}
			o.snapshot = b
		case api.DBusOptPolicy:
			s, ok := v.Value().(string)
			if !ok {
				return o, bad("s")
			}
			switch s {
			case api.DBusPolicyDropOldest:
				o.policy = fanout.DropOldest
			case api.DBusPolicyDisconnect:
				o.policy = fanout.Disconnect
			case api.DBusPolicyCoalesce:
				o.policy = fanout.Coalesce
			default:
				return o, dbusErr(api.DBusErrorBadOption, "option %q: unknown policy %q (want %s, %s or %s)",
					k, s, api.DBusPolicyDropOldest, api.DBusPolicyDisconnect, api.DBusPolicyCoalesce)
			}
			o.policyName = s
		case api.DBusOptQueueDepth:
			n, ok := v.Value().(uint32)
			if !ok {
				return o, bad("u")
			}
			o.queueLen = int(n)
		default:
			return o, dbusErr(api.DBusErrorBadOption, "unknown option %q (known: %s, %s, %s, %s, %s)", k,
				api.DBusOptResumeEpoch, api.DBusOptResumeSeq, api.DBusOptSnapshot, api.DBusOptPolicy, api.DBusOptQueueDepth)
		}
	}
	if (epoch == nil) != (seq == nil) {
		return o, dbusErr(api.DBusErrorBadOption, "options %q and %q go together", api.DBusOptResumeEpoch, api.DBusOptResumeSeq)
	}
	if epoch != nil {
		o.resume = &fanout.Position{Epoch: *epoch, Seq: *seq}
	}
	return o, nil
}

// subscribe implements Manager.Subscribe (manual reply).
func (sess *session) subscribe(msg dbus.Message, expr string, opts map[string]dbus.Variant) *dbus.Error {
	if !sess.enter() {
		sess.reply(&msg, dbusErr(api.DBusErrorFailed, "service is shutting down"))
		return nil
	}
	defer sess.leave()
	s, e := sess.newSub(&msg, expr, opts)
	if e != nil {
		sess.reply(&msg, e)
		return nil
	}
	sess.reply(&msg, nil, s.path)
	s.start()
	return nil
}

// sources implements Manager.Sources.
func (sess *session) sources() ([]sourceInfo, *dbus.Error) {
	out := []sourceInfo{}
	if sess.svc.cfg.Sources == nil {
		return out, nil
	}
	for _, h := range sess.svc.cfg.Sources() {
		si := sourceInfo{Name: h.Name, Source: string(h.Source), State: string(h.State), Origins: []string{},
			Reason: h.Reason, Errno: h.Errno, Events: h.Events, Losses: h.Losses}
		for _, o := range h.Origins {
			si.Origins = append(si.Origins, string(o))
		}
		if !h.Since.IsZero() {
			si.SinceUsec = uint64(h.Since.UnixMicro())
		}
		out = append(out, si)
	}
	return out, nil
}

// history implements Manager.History (manual reply): the matching,
// policy-allowed events after since in a sealed memfd.
func (sess *session) history(msg dbus.Message, since uint64, expr string) *dbus.Error {
	if !sess.enter() {
		sess.reply(&msg, dbusErr(api.DBusErrorFailed, "service is shutting down"))
		return nil
	}
	defer sess.leave()
	if _, err := subs.Compile(expr); err != nil {
		sess.reply(&msg, coreErr(err))
		return nil
	}
	sender, _ := msg.Headers[dbus.FieldSender].Value().(string)
	o, e := sess.ownerFor(sender)
	if e != nil {
		sess.reply(&msg, e)
		return nil
	}
	res, err := o.cn.History(subs.HistoryRequest{Filter: expr, After: since, Max: api.DBusMaxHistory})
	if err != nil {
		sess.reply(&msg, coreErr(err))
		return nil
	}
	evs := res.Events
	b, err := history.EncodeStream(evs)
	if err != nil {
		// Some event has no record layout: leave those out rather than
		// fail the whole call (History is the record-ABI view).
		kept := evs[:0:0]
		for _, ev := range evs {
			if len(ev.Raw) > 0 {
				kept = append(kept, ev)
			} else if _, err := eventrec.FromEvent(ev); err == nil {
				kept = append(kept, ev)
			}
		}
		evs = kept
		b, err = history.EncodeStream(evs)
	}
	if err != nil {
		sess.reply(&msg, dbusErr(api.DBusErrorFailed, "encode history: %v", err))
		return nil
	}
	mf, err := sealedMemfd("notifyd-history", b)
	if err != nil {
		sess.reply(&msg, dbusErr(api.DBusErrorFailed, "%v", err))
		return nil
	}
	sess.reply(&msg, nil, dbus.UnixFD(mf.Fd()), uint32(len(evs)))
	mf.Close()
	return nil
}

// coreErr maps a subscription core error to its D-Bus error name.
func coreErr(err error) *dbus.Error {
	name := api.DBusErrorFailed
	switch subs.CodeOf(err) {
	case subs.CodeBadFilter:
		name = api.DBusErrorBadFilter
	case subs.CodeBadRequest:
		name = api.DBusErrorBadOption
	case subs.CodeDenied:
		name = api.DBusErrorDenied
	case subs.CodeLimit:
		name = api.DBusErrorLimit
	case subs.CodeNotSupported:
		name = api.DBusErrorNotSupported
	}
	return dbusErr(name, "%v", err)
}

// attachKeyWatch implements Manager.AttachKeyWatch (manual reply): a key
// watch tied to the caller's connection.
func (sess *session) attachKeyWatch(msg dbus.Message) *dbus.Error {
	if !sess.enter() {
		sess.reply(&msg, dbusErr(api.DBusErrorFailed, "service is shutting down"))
		return nil
	}
	defer sess.leave()
	sender, _ := msg.Headers[dbus.FieldSender].Value().(string)
	o, e := sess.ownerFor(sender)
	if e != nil {
		sess.reply(&msg, e)
		return nil
	}
	kw, err := o.cn.AttachKeyWatch(subs.KeyWatchOptions{})
	if err != nil {
		sess.reply(&msg, coreErr(err))
		return nil
	}
	// kw.File stays open until the watch ends: the core owns it (the bus
	// duplicates it into the client).
	sess.reply(&msg, nil, dbus.UnixFD(kw.File.Fd()), kw.Owner)
	return nil
}

// managerProps returns the manager's properties.
func (sess *session) managerProps() map[string]dbus.Variant {
	st := sess.svc.cfg.Core.Hub().Stats()
	return map[string]dbus.Variant{
		"Version":       dbus.MakeVariant(uint32(1)),
		"Epoch":         dbus.MakeVariant(st.Epoch),
		"Seq":           dbus.MakeVariant(st.Seq),
		"Subscribers":   dbus.MakeVariant(uint32(st.Subscribers)),
		"Published":     dbus.MakeVariant(st.Published),
		"Deliveries":    dbus.MakeVariant(st.Deliveries),
		"Drops":         dbus.MakeVariant(st.Drops),
		"Denials":       dbus.MakeVariant(st.Denials),
		"HistoryLength": dbus.MakeVariant(uint32(st.HistoryLen)),
		"HistoryLowSeq": dbus.MakeVariant(st.HistoryLow),
	}
}

func (sess *session) managerGet(iface, name string) (dbus.Variant, *dbus.Error) {
	if iface != api.DBusManagerInterface {
		return dbus.Variant{}, dbusErr(errUnknownIface, "no interface %q here", iface)
	}
	v, ok := sess.managerProps()[name]
	if !ok {
		return dbus.Variant{}, dbusErr(errUnknownProperty, "no property %q", name)
	}
	return v, nil
}

func (sess *session) managerGetAll(iface string) (map[string]dbus.Variant, *dbus.Error) {
	if iface != api.DBusManagerInterface && iface != "" {
		return map[string]dbus.Variant{}, nil
	}
	return sess.managerProps(), nil
}

func propSet(iface, name string, _ dbus.Variant) *dbus.Error {
	return dbusErr(errReadOnly, "property %s.%s is read-only", iface, name)
}
