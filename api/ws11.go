package api

import "encoding/json"

// Protocol 1.1 (docs/websocket.md, "Protocol 1.1"). A client opts in by
// sending ClientHello as its first message (or protocol=1.1 in the URL);
// a 1.0 client never does and is served exactly as before. In 1.1 a
// connection carries several subscriptions, each named by the client
// (Sub), opened, changed and closed in-band; every delivery is a batch
// frame naming its subscription; history is paged over the socket.

// ProtocolMinor is the highest minor version of protocol 1 this package
// speaks.
const ProtocolMinor = 1

// Client → server message types added in 1.1.
const (
	TypeClientHello MessageType = "hello"       // opt into 1.1: ClientMessage with Protocol and Minor
	TypeUnsubscribe MessageType = "unsubscribe" // end subscription Sub
	TypeUpdate      MessageType = "update"      // change subscription Sub's filter
	TypeHistory     MessageType = "history"     // page through history (also the server's answer)
)

// Server → client message types added in 1.1.
const (
	TypeSubscribed   MessageType = "subscribed"   // a subscription started: Hello with Sub
	TypeUnsubscribed MessageType = "unsubscribed" // a subscription ended: Unsubscribed
	TypeUpdated      MessageType = "updated"      // a filter change took effect: Updated
)

// MaxSubName is the longest subscription name a client may choose.
const MaxSubName = 64

// MaxHistoryPage is the most events one history request returns; a client
// pages for more.
const MaxHistoryPage = 10000

// Session is the server's answer to a 1.1 client hello: what the
// connection is, before any subscription.
type Session struct {
	Type      MessageType   `json:"type"` // TypeHello
	ID        string        `json:"id,omitempty"`
	Protocol  int           `json:"protocol"` // 1
	Minor     int           `json:"minor"`    // 1
	Server    string        `json:"server"`   // "notifyd"
	Version   string        `json:"version,omitempty"`
	Epoch     string        `json:"epoch"`
	Seq       uint64        `json:"seq"`
	Transport string        `json:"transport"`      // "unix" or "tcp"
	UID       *int64        `json:"uid,omitempty"`  // the policy subject's uid
	User      string        `json:"user,omitempty"` // its user name (the uid in decimal when unknown)
	Auth      string        `json:"auth,omitempty"` // how the subject was established: AuthPeer, AuthToken, AuthSession
	Limits    SessionLimits `json:"limits"`
}

// SessionLimits are the bounds a 1.1 client works within.
type SessionLimits struct {
	Subscriptions int `json:"subscriptions"` // per user, all connections (limits.max_subscribers_per_user)
	Queue         int `json:"queue"`         // largest queue depth (limits.max_queue_len)
	HistoryPage   int `json:"history_page"`  // most events one history request returns
	BatchEvents   int `json:"batch_events"`  // most events in one batch or history frame
}

// Unsubscribed says a subscription ended: at the client's request
// (Reason "unsubscribed", ID echoed) or the server's ("slow", "closed").
type Unsubscribed struct {
	Type     MessageType `json:"type"` // TypeUnsubscribed
	ID       string      `json:"id,omitempty"`
	Sub      string      `json:"sub"`
	Reason   ByeReason   `json:"reason"`
	Message  string      `json:"message,omitempty"`
	Position string      `json:"position,omitempty"` // where to resume: the last seq handed over
	// Delivered and Lost are the subscription's final counts: events
	// handed over, and events covered by loss events.
	Delivered uint64 `json:"delivered"`
	Lost      uint64 `json:"lost"`
}

// Updated says a filter change took effect: events after Position are
// judged by the new filter (replayed from history when they were queued
// under the old one), so nothing is skipped and nothing repeated.
type Updated struct {
	Type     MessageType `json:"type"` // TypeUpdated
	ID       string      `json:"id,omitempty"`
	Sub      string      `json:"sub"`
	Position string      `json:"position"`
	// Recovered is false when the history no longer held everything
	// after Position; a loss event for the subscription says what.
	Recovered bool     `json:"recovered"`
	Settings  Settings `json:"settings"`
	// Subscription is the id in status listings from now on: a filter
	// change makes a new subscription in the hub.
	Subscription uint64 `json:"subscription,omitempty"`
	// Delivered and Lost are the final counts under the old filter.
	Delivered uint64 `json:"delivered"`
	Lost      uint64 `json:"lost"`
}

// HistoryPage is one frame of the answer to a history request; the last
// frame of an answer has Done set. Events are in seq order, loss events
// included, in the event JSON form.
type HistoryPage struct {
	Type      MessageType       `json:"type"` // TypeHistory
	ID        string            `json:"id"`
	Epoch     string            `json:"epoch"`
	Seq       uint64            `json:"seq"`       // the hub's last seq when read
	Low       uint64            `json:"low"`       // the oldest seq the history holds
	Recovered bool              `json:"recovered"` // since: everything after it was held
	More      bool              `json:"more"`      // the limit cut the answer: page on
	Done      bool              `json:"done"`      // the last frame of this answer
	Events    []json.RawMessage `json:"events"`
}
