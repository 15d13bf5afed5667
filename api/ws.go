package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/notifyd/notifyd/event"
)

// ProtocolVersion is the WebSocket protocol version this package speaks.
// It changes only when a message or field changes meaning or disappears;
// new optional fields and new message types a client may ignore do not
// change it. The version is also in the endpoint path (PathWS).
const ProtocolVersion = 1

// HTTP paths. PathWS and PathStatus are served on both listeners; the fd
// passing paths only on the unix socket, where the peer's credentials are
// known and SCM_RIGHTS exists.
const (
	PathWS       = "/v1/ws"        // WebSocket endpoint
	PathStatus   = "/v1/status"    // GET: the Status document as JSON
	PathKeyWatch = "/v1/key-watch" // POST (unix only): write end of a per-client notification pipe
	PathDetach   = "/v1/detach"    // POST (unix only): end a kept key-watch attachment
	PathHistory  = "/v1/history"   // POST (unix only): sealed memfd with matching history
)

// Query parameters of PathWS, PathHistory and PathKeyWatch.
const (
	ParamFilter   = "filter"   // filter expression (package filter syntax); empty: everything
	ParamSince    = "since"    // resume point EPOCH:SEQ
	ParamSnapshot = "snapshot" // "1" or "true": current-state snapshot first
	ParamPolicy   = "policy"   // slow-subscriber policy
	ParamQueue    = "queue"    // queue depth in events
	ParamOwner    = "owner"    // key-watch owner token (unix socket only)
	ParamToken    = "token"    // bearer token for browsers (TCP only)
	ParamKeep     = "keep"     // PathKeyWatch: "1" keeps the attachment after the caller exits
	ParamMax      = "max"      // PathHistory: most events to return
)

// MaxQueue was the protocol's bound on the queue depth a client may ask
// for.
//
// Deprecated: the daemon's own limit (limits.max_queue_len, default
// 65536; the session hello's limits.queue) is the bound, and a larger
// queue is refused with an answer that names it. The protocol only
// requires a non-negative depth.
const MaxQueue = 1 << 20

// MaxClientMessage is the largest client message the server reads; a
// larger frame closes the connection with CloseTooBig.
const MaxClientMessage = 64 << 10

// MessageType is the "type" member every message carries.
type MessageType string

// Client → server message types.
const (
	TypeSubscribe MessageType = "subscribe" // start the subscription (once per connection)
	TypeStatus    MessageType = "status"    // ask for a Status (also the server's answer)
)

// Server → client message types.
const (
	TypeHello       MessageType = "hello"        // subscription started: Hello
	TypeSnapshot    MessageType = "snapshot"     // one current-state item (event JSON form)
	TypeSnapshotEnd MessageType = "snapshot-end" // end of the snapshot: SnapshotEnd
	TypeEvent       MessageType = "event"        // one event (event JSON form)
	TypeLoss        MessageType = "loss"         // a gap (event JSON form with "loss")
	TypeBatch       MessageType = "batch"        // several event/loss/snapshot items in one frame: Batch
	TypeError       MessageType = "error"        // a request failed: Error
	TypeBye         MessageType = "bye"          // the server ends the connection: Bye
)

// Policy is the slow-subscriber policy as spelled on the wire.
type Policy string

// The policies (fanout.DropOldest, fanout.Disconnect, fanout.Coalesce).
const (
	PolicyDropOldest Policy = "drop-oldest"
	PolicyDisconnect Policy = "disconnect"
	PolicyCoalesce   Policy = "coalesce"
)

// ParsePolicy parses a policy name; "" is PolicyDropOldest.
func ParsePolicy(s string) (Policy, error) {
	switch p := Policy(s); p {
	case "":
		return PolicyDropOldest, nil
	case PolicyDropOldest, PolicyDisconnect, PolicyCoalesce:
		return p, nil
	}
	return "", fmt.Errorf("unknown policy %q (want drop-oldest, disconnect or coalesce)", s)
}

// Position is a resume point: everything up to and including Seq of Epoch
// has been seen. Its text form is EPOCH:SEQ with EPOCH as 16 hex digits
// (event.FormatEpoch) and SEQ decimal.
type Position struct {
	Epoch uint64
	Seq   uint64
}

func (p Position) String() string {
	return event.FormatEpoch(p.Epoch) + ":" + strconv.FormatUint(p.Seq, 10)
}

// ParsePosition parses EPOCH:SEQ.
func ParsePosition(s string) (Position, error) {
	ep, sq, ok := strings.Cut(s, ":")
	if !ok {
		return Position{}, fmt.Errorf("parse position %q: want EPOCH:SEQ", s)
	}
	e, err := event.ParseEpoch(ep)
	if err != nil {
		return Position{}, fmt.Errorf("parse position %q: %w", s, err)
	}
	q, err := strconv.ParseUint(sq, 10, 64)
	if err != nil {
		return Position{}, fmt.Errorf("parse position %q: want a decimal seq after the colon", s)
	}
	return Position{Epoch: e, Seq: q}, nil
}

// Request is what a client asks for when it subscribes, from the URL
// query or a subscribe message.
type Request struct {
	Filter   string
	Since    *Position // nil: live events only
	Snapshot bool
	Policy   Policy // "" means PolicyDropOldest
	Queue    int    // 0: the server's default; at most its limits.max_queue_len
	Owner    string // key-watch owner token (unix socket only)
}

// Query returns r as URL query parameters (the inverse of ParseQuery).
func (r Request) Query() url.Values {
	v := url.Values{}
	if r.Filter != "" {
		v.Set(ParamFilter, r.Filter)
	}
	if r.Since != nil {
		v.Set(ParamSince, r.Since.String())
	}
	if r.Snapshot {
		v.Set(ParamSnapshot, "1")
	}
	if r.Policy != "" {
		v.Set(ParamPolicy, string(r.Policy))
	}
	if r.Queue != 0 {
		v.Set(ParamQueue, strconv.Itoa(r.Queue))
	}
	if r.Owner != "" {
		v.Set(ParamOwner, r.Owner)
	}
	return v
}

// RequestError is a malformed request: which parameter and why.
type RequestError struct {
	Param string
	Err   error
}

func (e *RequestError) Error() string { return "bad " + e.Param + ": " + e.Err.Error() }
func (e *RequestError) Unwrap() error { return e.Err }

// ParseQuery reads a subscription request from URL query parameters. ok
// reports whether any subscription parameter was present, in which case
// the server subscribes at once; otherwise it waits for a subscribe
// message. The filter text is not compiled here.
func ParseQuery(v url.Values) (r Request, ok bool, err error) {
	for _, k := range []string{ParamFilter, ParamSince, ParamSnapshot, ParamPolicy, ParamQueue, ParamOwner, "subscribe"} {
		if _, has := v[k]; has {
			ok = true
		}
	}
	r.Filter = v.Get(ParamFilter)
	if s := v.Get(ParamSince); s != "" {
		p, err := ParsePosition(s)
		if err != nil {
			return Request{}, ok, &RequestError{ParamSince, err}
		}
		r.Since = &p
	}
	if s := v.Get(ParamSnapshot); s != "" {
		b, err := strconv.ParseBool(s)
		if err != nil {
			return Request{}, ok, &RequestError{ParamSnapshot, fmt.Errorf("want 1/0/true/false, got %q", s)}
		}
		r.Snapshot = b
	}
	if r.Policy, err = ParsePolicy(v.Get(ParamPolicy)); err != nil {
		return Request{}, ok, &RequestError{ParamPolicy, err}
	}
	if s := v.Get(ParamQueue); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return Request{}, ok, &RequestError{ParamQueue, fmt.Errorf("want a depth in events, 0 for the daemon's default (at most its limits.max_queue_len), got %q", s)}
		}
		r.Queue = n
	}
	r.Owner = v.Get(ParamOwner)
	return r, ok, nil
}

// ClientMessage is any message a client sends. Type selects the meaning;
// ID, when set, is echoed in the answer (status, error).
type ClientMessage struct {
	Type MessageType `json:"type"`
	ID   string      `json:"id,omitempty"`
	// subscribe
	Filter   string `json:"filter,omitempty"`
	Since    string `json:"since,omitempty"` // EPOCH:SEQ
	Snapshot bool   `json:"snapshot,omitempty"`
	Policy   Policy `json:"policy,omitempty"`
	Queue    int    `json:"queue,omitempty"`
	Owner    string `json:"owner,omitempty"`
	// 1.1: hello
	Protocol int `json:"protocol,omitempty"`
	Minor    int `json:"minor,omitempty"`
	// 1.1: the subscription a subscribe, unsubscribe or update names
	Sub string `json:"sub,omitempty"`
	// 1.1: history (with Filter, Since and Owner)
	Before uint64 `json:"before,omitempty"` // the page before this seq
	Limit  int    `json:"limit,omitempty"`  // most events (0: MaxHistoryPage)
}

// ErrorCode names why a request failed.
type ErrorCode string

// The error codes.
const (
	CodeBadJSON      ErrorCode = "bad-json"           // the frame is not a JSON object with a string "type"
	CodeUnknownType  ErrorCode = "unknown-type"       // the type is not one a client may send
	CodeBadRequest   ErrorCode = "bad-request"        // a field is malformed (since, policy, queue, owner)
	CodeBadFilter    ErrorCode = "bad-filter"         // the filter does not parse; Pos says where
	CodeSubscribed   ErrorCode = "already-subscribed" // 1.0: a second subscribe on one connection; 1.1: the sub name is in use
	CodeUnknownSub   ErrorCode = "unknown-sub"        // 1.1: no subscription of that name on this connection
	CodeDenied       ErrorCode = "denied"             // the policy refused the subscription
	CodeLimit        ErrorCode = "limit"              // a limit is reached (connections, subscriptions, queue); the message names it
	CodeBinary       ErrorCode = "binary"             // a binary frame (the protocol is text only)
	CodeInternal     ErrorCode = "internal"           // the server failed
	CodeUnauthorized ErrorCode = "unauthorized"       // HTTP 401 body: missing or wrong token
	CodeForbidden    ErrorCode = "forbidden"          // HTTP 403 body: origin not allowed, or not on this listener
	CodeUnsupported  ErrorCode = "unsupported"        // HTTP 501 body: the daemon lacks the capability
)

// DecodeError is a client message that cannot be used; Code is
// CodeBadJSON, CodeUnknownType or CodeBadRequest.
type DecodeError struct {
	Code ErrorCode
	Msg  string
}

func (e *DecodeError) Error() string { return string(e.Code) + ": " + e.Msg }

// DecodeClientMessage decodes and validates one client frame. Unknown
// members are ignored (forward compatibility); an unknown type, a type a
// client may not send, or a malformed field is a *DecodeError.
func DecodeClientMessage(b []byte) (*ClientMessage, error) {
	var m ClientMessage
	d := json.NewDecoder(bytes.NewReader(b))
	if err := d.Decode(&m); err != nil {
		return nil, &DecodeError{CodeBadJSON, "decode message: " + err.Error()}
	}
	if d.More() {
		return nil, &DecodeError{CodeBadJSON, "decode message: trailing data after the JSON object"}
	}
	switch m.Type {
	case TypeSubscribe, TypeUpdate, TypeHistory:
		if _, err := m.Request(); err != nil {
			return nil, &DecodeError{CodeBadRequest, err.Error()}
		}
		if len(m.Sub) > MaxSubName {
			return nil, &DecodeError{CodeBadRequest, fmt.Sprintf("sub: at most %d bytes", MaxSubName)}
		}
		if m.Limit < 0 || m.Limit > MaxHistoryPage {
			return nil, &DecodeError{CodeBadRequest, fmt.Sprintf("limit: want 0..%d, got %d", MaxHistoryPage, m.Limit)}
		}
	case TypeClientHello:
		if m.Protocol != ProtocolVersion {
			return nil, &DecodeError{CodeBadRequest, fmt.Sprintf("protocol %d: this server speaks %d", m.Protocol, ProtocolVersion)}
		}
	case TypeUnsubscribe:
	case TypeStatus:
	case "":
		return nil, &DecodeError{CodeBadJSON, `decode message: missing "type"`}
	default:
		return nil, &DecodeError{CodeUnknownType, fmt.Sprintf("unknown message type %q (a client sends hello, subscribe, unsubscribe, update, history or status)", m.Type)}
	}
	return &m, nil
}

// Request returns the subscription request of a subscribe message.
func (m *ClientMessage) Request() (Request, error) {
	r := Request{Filter: m.Filter, Snapshot: m.Snapshot, Queue: m.Queue, Owner: m.Owner}
	if m.Since != "" {
		p, err := ParsePosition(m.Since)
		if err != nil {
			return Request{}, &RequestError{ParamSince, err}
		}
		r.Since = &p
	}
	var err error
	if r.Policy, err = ParsePolicy(string(m.Policy)); err != nil {
		return Request{}, &RequestError{ParamPolicy, err}
	}
	if m.Queue < 0 {
		return Request{}, &RequestError{ParamQueue, fmt.Errorf("want a depth in events, 0 for the daemon's default (at most its limits.max_queue_len), got %d", m.Queue)}
	}
	return r, nil
}

// Settings are a subscription's effective settings, as the server applied
// them (in hello).
type Settings struct {
	Filter    string `json:"filter"`          // normalised filter text; "" matches everything
	Since     string `json:"since,omitempty"` // resume point asked for
	Snapshot  bool   `json:"snapshot"`
	Policy    Policy `json:"policy"`
	Queue     int    `json:"queue"`           // queue depth in events
	Owner     bool   `json:"owner,omitempty"` // a key-watch owner token applies
	Transport string `json:"transport"`       // "unix" or "tcp"
	UID       *int64 `json:"uid,omitempty"`   // the credentials the policy applies (unix socket)
	// Sources are the sources the subscription receives: those its filter
	// can match that the policy's Watch hook allowed.
	Sources []string `json:"sources"`
	// DeniedSources are those its filter could match that the policy
	// refused; their events are never delivered.
	DeniedSources []DeniedSource `json:"denied_sources,omitempty"`
}

// DeniedSource is a source the policy refused a subscription, and why.
type DeniedSource struct {
	Source string `json:"source"`
	Reason string `json:"reason"` // the rule and its text
}

// Hello starts a subscription's stream.
type Hello struct {
	Type     MessageType `json:"type"` // TypeHello
	Protocol int         `json:"protocol"`
	Server   string      `json:"server"`            // "notifyd"
	Version  string      `json:"version,omitempty"` // the daemon's version
	Epoch    string      `json:"epoch"`             // 16 hex digits
	// Seq is the last seq stamped when the subscription started: live
	// events follow it (after any replay and snapshot).
	Seq uint64 `json:"seq"`
	// Resumed says a since was asked for; Recovered that every missed
	// event is replayed next. Resumed && !Recovered: a loss message
	// comes first and says what is gone.
	Resumed      bool     `json:"resumed"`
	Recovered    bool     `json:"recovered"`
	Subscription uint64   `json:"subscription"` // id in status listings
	Settings     Settings `json:"settings"`
	// Sub (1.1, Type TypeSubscribed) is the client's name for the
	// subscription; ID echoes the subscribe message's id.
	Sub string `json:"sub,omitempty"`
	ID  string `json:"id,omitempty"`
}

// SnapshotEnd follows the last snapshot item.
type SnapshotEnd struct {
	Type  MessageType `json:"type"`          // TypeSnapshotEnd
	Sub   string      `json:"sub,omitempty"` // 1.1: the subscription
	Seq   uint64      `json:"seq"`           // the snapshot is the state after this seq
	Count int         `json:"count"`
}

// Batch carries several items in one frame, in order; each item is the
// event JSON form (type event, loss or snapshot).
type Batch struct {
	Type   MessageType       `json:"type"`          // TypeBatch
	Sub    string            `json:"sub,omitempty"` // 1.1: the subscription
	Events []json.RawMessage `json:"events"`
}

// Error reports a failed request. The connection stays open unless a bye
// or a close frame follows.
type Error struct {
	Type    MessageType `json:"type"` // TypeError
	ID      string      `json:"id,omitempty"`
	Sub     string      `json:"sub,omitempty"` // 1.1: the subscription the request named
	Code    ErrorCode   `json:"code"`
	Message string      `json:"message"`
	Pos     *int        `json:"pos,omitempty"` // bad-filter: byte offset in the filter
}

func (e *Error) Error() string {
	if e.Pos != nil {
		return fmt.Sprintf("%s: %s (at position %d)", e.Code, e.Message, *e.Pos)
	}
	return string(e.Code) + ": " + e.Message
}

// ByeReason says why the server ends a connection.
type ByeReason string

// The bye reasons.
const (
	ByeShutdown ByeReason = "shutdown"  // the daemon stops; reconnect and resume
	ByeSlow     ByeReason = "slow"      // policy disconnect: the queue overflowed
	ByePeerExit ByeReason = "peer-exit" // the process that connected has exited
	ByeClosed   ByeReason = "closed"    // the subscription was closed by the daemon
	ByeIdle     ByeReason = "idle"      // no subscription within the idle timeout (limits.idle_timeout)
)

// Bye is the last message on a connection before the close frame.
type Bye struct {
	Type    MessageType `json:"type"` // TypeBye
	Reason  ByeReason   `json:"reason"`
	Message string      `json:"message"`
	// Position is where to resume (the last seq the server handed over).
	Position string `json:"position,omitempty"`
}

// WebSocket close codes notifyd uses (4000-4999 is the private range).
const (
	CloseNormal      = 1000 // after bye shutdown/closed
	CloseGoingAway   = 1001 // daemon shutdown
	CloseUnsupported = 1003 // binary frame
	CloseInvalidUTF8 = 1007 // a text frame that is not valid UTF-8
	ClosePolicy      = 1008 // denied
	CloseTooBig      = 1009 // frame larger than MaxClientMessage
	CloseSlow        = 4008 // slow subscriber, disconnect policy (as Centrifugo's 3008)
	ClosePeerExit    = 4010 // the connecting process exited
	CloseIdle        = 4011 // no subscription within the idle timeout
)

// HubStatus is the fan-out hub's counters.
type HubStatus struct {
	Epoch       string `json:"epoch"`
	Seq         uint64 `json:"seq"`
	Published   uint64 `json:"published"`
	Subscribers int    `json:"subscribers"`
	HistoryLen  int    `json:"history_len"`
	HistoryLow  uint64 `json:"history_low"`
	Deliveries  uint64 `json:"deliveries"`
	Drops       uint64 `json:"drops"`
	Denials     uint64 `json:"denials"`
}

// SubscriberStatus is one subscription's counters.
type SubscriberStatus struct {
	ID         uint64    `json:"id"`
	Label      string    `json:"label"`
	UID        uint32    `json:"uid"`
	Policy     Policy    `json:"policy"`
	Delivered  uint64    `json:"delivered"`
	Lost       uint64    `json:"lost"`
	LossEvents uint64    `json:"loss_events"`
	Coalesced  uint64    `json:"coalesced"`
	Denied     uint64    `json:"denied"`
	Queued     int       `json:"queued"` // items queued now, at most QueueLen
	QueueLen   int       `json:"queue_len"`
	Since      time.Time `json:"since"`
	// LossPending says the queue overflowed and a loss item covering what
	// it dropped will be handed out ahead of the Queued items.
	LossPending bool `json:"loss_pending,omitempty"`
}

// WebStatus is the WebSocket server's own counters.
type WebStatus struct {
	Connections   int    `json:"connections"` // open WebSocket connections
	Accepted      uint64 `json:"accepted"`    // upgrades since start
	Refused       uint64 `json:"refused"`     // requests refused (auth, origin, bad request)
	Frames        uint64 `json:"frames"`      // frames written
	Batches       uint64 `json:"batches"`     // of which batch frames
	WriteTimeouts uint64 `json:"write_timeouts"`
	KeyWatches    int    `json:"key_watches"` // live key-watch attachments
}

// Status is the answer to a status message and GET PathStatus.
type Status struct {
	Type        MessageType        `json:"type"` // TypeStatus
	ID          string             `json:"id,omitempty"`
	Protocol    int                `json:"protocol"`
	Version     string             `json:"version,omitempty"` // the daemon's version
	Time        time.Time          `json:"time"`
	Hub         HubStatus          `json:"hub"`
	Sources     []event.Health     `json:"sources"`
	Subscribers []SubscriberStatus `json:"subscribers"`
	Web         WebStatus          `json:"web"`
	Limits      *LimitsStatus      `json:"limits,omitempty"` // administrators only
	DBus        *DBusStatus        `json:"dbus,omitempty"`   // absent when the daemon runs without D-Bus
}

// DBusStatus is the D-Bus service's state (docs/dbus-api.md).
type DBusStatus struct {
	// State is "connecting", "serving" (connected and owning the name),
	// "waiting" (the bus is unreachable or the name is taken: retrying)
	// or "stopped".
	State string `json:"state"`
	Bus   string `json:"bus"`  // the bus address in use (or as configured)
	Name  string `json:"name"` // the well-known name, DBusName
	// Owned says the daemon owns Name now; Unique is its unique name then.
	Owned  bool   `json:"owned"`
	Unique string `json:"unique,omitempty"`
	// Error is the last connection error while not serving.
	Error string    `json:"error,omitempty"`
	Since time.Time `json:"since"` // when State last changed
	// Connects counts the times the daemon connected and owned the name
	// (more than 1: the bus went away and came back).
	Connects uint64 `json:"connects"`
	// Subscriptions is the number of live D-Bus subscriptions.
	Subscriptions int `json:"subscriptions"`
}

// LimitsStatus is the subscription core's view: limits in force, use and
// refusals (shown to administrators).
type LimitsStatus struct {
	MaxConnections        int               `json:"max_connections"`
	AdminReserve          int               `json:"admin_reserve"`
	MaxConnectionsPerUser int               `json:"max_connections_per_user"`
	MaxSubscribers        int               `json:"max_subscribers"`
	MaxSubscribersPerUser int               `json:"max_subscribers_per_user"`
	MaxQueueBytesPerUser  int64             `json:"max_queue_bytes_per_user"`
	IdleTimeout           string            `json:"idle_timeout"`
	Connections           int               `json:"connections"`
	Subscriptions         int               `json:"subscriptions"`
	Refused               map[string]uint64 `json:"refused"`
	Denied                uint64            `json:"denied"`                  // subscriptions the Watch hook refused
	KernelFilter          string            `json:"kernel_filter,omitempty"` // the key queue's kernel filter (sources.key_kernel_filter)
}

// KeyWatchReply is the JSON body of a PathKeyWatch answer; the write end
// of the notification pipe arrives with it as SCM_RIGHTS.
type KeyWatchReply struct {
	Owner string `json:"owner"` // pass as ParamOwner / "owner" when subscribing
	Kept  bool   `json:"kept"`  // survives the caller's exit (until PathDetach)
	Reuse bool   `json:"reuse"` // an existing attachment was handed back
}

// HistorySeals are the seals of a history memfd: it can neither shrink,
// grow, be written, nor have its seals changed. A client checks them
// (F_GET_SEALS) before it maps the file.
const HistorySeals = unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE | unix.F_SEAL_SEAL

// HistoryReply is the JSON body of a PathHistory answer; a sealed memfd
// holding history.EncodeStream of the events arrives with it as SCM_RIGHTS.
type HistoryReply struct {
	Epoch   string `json:"epoch"`
	Seq     uint64 `json:"seq"` // hub seq when taken: resume after it for live events
	Count   int    `json:"count"`
	FromSeq uint64 `json:"from_seq,omitempty"`
	ToSeq   uint64 `json:"to_seq,omitempty"`
	Size    int64  `json:"size"` // bytes in the memfd
}

// HTTPError is the JSON body of every non-2xx HTTP answer.
type HTTPError struct {
	Code    ErrorCode `json:"code"`
	Message string    `json:"message"`
	Pos     *int      `json:"pos,omitempty"`
}

// ServerMessage is a decoded server frame. Type says which member is set:
// Hello, SnapshotEnd, Error, Bye, Status; for event, loss, snapshot and
// batch frames Events holds the items in order.
type ServerMessage struct {
	Type        MessageType
	Hello       *Hello
	SnapshotEnd *SnapshotEnd
	Error       *Error
	Bye         *Bye
	Status      *Status
	Events      []*event.Event
}

// DecodeServerMessage decodes one server frame. Unknown message types
// are returned with only Type set, so a client can skip them.
func DecodeServerMessage(b []byte) (*ServerMessage, error) {
	var head struct {
		Type MessageType `json:"type"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		return nil, fmt.Errorf("decode server message: %w", err)
	}
	m := &ServerMessage{Type: head.Type}
	var err error
	switch head.Type {
	case TypeHello:
		m.Hello = new(Hello)
		err = json.Unmarshal(b, m.Hello)
	case TypeSnapshotEnd:
		m.SnapshotEnd = new(SnapshotEnd)
		err = json.Unmarshal(b, m.SnapshotEnd)
	case TypeError:
		m.Error = new(Error)
		err = json.Unmarshal(b, m.Error)
	case TypeBye:
		m.Bye = new(Bye)
		err = json.Unmarshal(b, m.Bye)
	case TypeStatus:
		m.Status = new(Status)
		err = json.Unmarshal(b, m.Status)
	case TypeEvent, TypeLoss, TypeSnapshot:
		ev := new(event.Event)
		err = ev.UnmarshalJSON(b)
		m.Events = []*event.Event{ev}
	case TypeBatch:
		var bt Batch
		if err = json.Unmarshal(b, &bt); err != nil {
			break
		}
		m.Events = make([]*event.Event, 0, len(bt.Events))
		for i, raw := range bt.Events {
			ev := new(event.Event)
			if err = ev.UnmarshalJSON(raw); err != nil {
				err = fmt.Errorf("batch item %d: %w", i, err)
				break
			}
			m.Events = append(m.Events, ev)
		}
	case "":
		return nil, errors.New(`decode server message: missing "type"`)
	}
	if err != nil {
		return nil, fmt.Errorf("decode server message %s: %w", head.Type, err)
	}
	return m, nil
}

// AppendBatch appends a batch frame holding the already-encoded items
// (each an event JSON form, e.g. (*event.Event).JSON()) to dst. Nothing
// is re-encoded.
func AppendBatch(dst []byte, items ...[]byte) []byte {
	dst = append(dst, `{"type":"batch","events":[`...)
	for i, it := range items {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, it...)
	}
	return append(dst, "]}"...)
}
