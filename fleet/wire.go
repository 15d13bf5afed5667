package fleet

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/notifyd/notifyd/event"
)

// Subjects and headers of the fleet stream (docs/fleet.md).
const (
	// SubjectPrefix is the first token of every fleet subject.
	SubjectPrefix = "notifyd"
	// StreamSubjects is what the stream stores: notifyd.<host>.<source>.<subtype>.
	StreamSubjects = SubjectPrefix + ".*.*.*"
	// heartbeatToken ends a host's heartbeat subject notifyd.<host>.hb,
	// which the stream does not store (three tokens).
	heartbeatToken = "hb"
	// HeaderPrev holds the position of the item the forwarder sent before
	// this one ("" for the first item of a forwarder without a resume
	// point).
	HeaderPrev = "Notifyd-Prev"
	// HeaderMsgID is JetStream's de-duplication header.
	HeaderMsgID = "Nats-Msg-Id"

	// PropPos is the property holding an event's position on its host
	// (EPOCH:SEQ) on the aggregator; PropRange the host range a loss
	// covers (EPOCH:FROM-TO).
	PropPos   = "HOST_POS"
	PropRange = "HOST_RANGE"

	// DefaultStream and DefaultConsumer name the stream and the
	// aggregator's durable consumer.
	DefaultStream   = "NOTIFYD"
	DefaultConsumer = "notifyd-aggregator"
)

// MaxHostLen bounds a host name.
const MaxHostLen = 64

// CheckHost reports whether name can be a host name in a subject: 1 to 64
// letters, digits, '-' and '_' (no '.', which separates subject tokens).
func CheckHost(name string) error {
	if name == "" || len(name) > MaxHostLen {
		return fmt.Errorf("host name %q: want 1 to %d characters", name, MaxHostLen)
	}
	for i := 0; i < len(name); i++ {
		if !tokenByte(name[i]) {
			return fmt.Errorf("host name %q: want letters, digits, '-' and '_' only", name)
		}
	}
	return nil
}

func tokenByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
}

// DefaultHost is this machine's host name up to its first dot, with
// characters a subject token cannot hold replaced by '_'.
func DefaultHost() (string, error) {
	h, err := os.Hostname()
	if err != nil {
		return "", fmt.Errorf("read host name: %w", err)
	}
	h, _, _ = strings.Cut(h, ".")
	h = token(h)
	if len(h) > MaxHostLen {
		h = h[:MaxHostLen]
	}
	return h, CheckHost(h)
}

// token makes s one subject token: characters other than letters, digits,
// '-' and '_' become '_', and "" becomes "_".
func token(s string) string {
	if s == "" {
		return "_"
	}
	ok := true
	for i := 0; i < len(s); i++ {
		ok = ok && tokenByte(s[i])
	}
	if ok {
		return s
	}
	b := []byte(s)
	for i, c := range b {
		if !tokenByte(c) {
			b[i] = '_'
		}
	}
	return string(b)
}

// Subject is the subject ev is published under from host:
// notifyd.<host>.<source>.<subtype>, with "any" for a loss of every
// source.
func Subject(host string, ev *event.Event) string {
	src := string(ev.Source)
	if src == "" {
		src = "any"
	}
	return SubjectPrefix + "." + host + "." + token(src) + "." + token(ev.Subtype)
}

// HeartbeatSubject is where host's forwarder says it is alive.
func HeartbeatSubject(host string) string { return SubjectPrefix + "." + host + "." + heartbeatToken }

// HostOf returns the host token of a stream or heartbeat subject.
func HostOf(subject string) (string, bool) {
	rest, ok := strings.CutPrefix(subject, SubjectPrefix+".")
	if !ok {
		return "", false
	}
	host, _, ok := strings.Cut(rest, ".")
	if !ok || CheckHost(host) != nil {
		return "", false
	}
	return host, true
}

// Position is a place in one host's stream of events: the host daemon's
// epoch and sequence number.
type Position struct {
	Epoch, Seq uint64
}

// IsZero reports whether p is no position.
func (p Position) IsZero() bool { return p == Position{} }

// String is the EPOCH:SEQ form ("" for no position).
func (p Position) String() string {
	if p.IsZero() {
		return ""
	}
	return event.FormatEpoch(p.Epoch) + ":" + strconv.FormatUint(p.Seq, 10)
}

// ParsePosition parses the EPOCH:SEQ form; "" is no position.
func ParsePosition(s string) (Position, error) {
	if s == "" {
		return Position{}, nil
	}
	e, q, ok := strings.Cut(s, ":")
	if !ok {
		return Position{}, fmt.Errorf("parse position %q: want EPOCH:SEQ", s)
	}
	ep, err := event.ParseEpoch(e)
	if err != nil {
		return Position{}, fmt.Errorf("parse position %q: %w", s, err)
	}
	seq, err := strconv.ParseUint(q, 10, 64)
	if err != nil || ep == 0 {
		return Position{}, fmt.Errorf("parse position %q: want EPOCH:SEQ", s)
	}
	return Position{ep, seq}, nil
}

// itemPos is the position an item of a host's stream ends at: its seq, or
// for a loss the last seq it covers.
func itemPos(ev *event.Event) Position {
	p := Position{ev.Epoch, ev.Seq}
	if l := ev.Loss; l != nil && l.ToSeq > p.Seq {
		p.Seq = l.ToSeq
	}
	return p
}

// errNotForwardable is an item the forwarder cannot place in a host's
// stream (no epoch).
var errNotForwardable = errors.New("item has no epoch")
