package subs

import (
	"errors"
	"fmt"

	"github.com/notifyd/notifyd/internal/feature"
)

// ErrNotSupported is the one "not supported" sentinel
// (feature.ErrNotSupported), re-exported for the transports.
var ErrNotSupported = feature.ErrNotSupported

// Code classifies an *Error; each transport maps it to its wire form (a
// WebSocket error code, an HTTP status, a D-Bus error name).
type Code uint8

// The error codes.
const (
	CodeInternal     Code = iota // a bug or an unexpected system error
	CodeBadFilter                // the filter does not parse; Pos says where
	CodeBadRequest               // an option is out of range
	CodeDenied                   // the policy refused
	CodeLimit                    // a limit is reached; the message names it
	CodeNotSupported             // the kernel or this daemon lacks the feature
	CodeClosed                   // the connection or the core has ended
)

var codeNames = [...]string{"internal", "bad-filter", "bad-request", "denied", "limit", "not-supported", "closed"}

func (c Code) String() string {
	if int(c) < len(codeNames) {
		return codeNames[c]
	}
	return fmt.Sprintf("code(%d)", c)
}

// Error is every error the core returns from Open, Subscribe, History and
// AttachKeyWatch.
type Error struct {
	Code Code
	Msg  string // a sentence for the user, without the code
	Pos  int    // CodeBadFilter: byte offset in the filter; -1 otherwise
	Err  error  // the cause, if any (errors.Is/As see it)
}

func (e *Error) Error() string { return e.Msg }

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrNotSupported) hold for CodeNotSupported.
func (e *Error) Is(target error) bool {
	return target == ErrNotSupported && e.Code == CodeNotSupported
}

func errorf(code Code, cause error, format string, args ...any) *Error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, args...), Pos: -1, Err: cause}
}

// CodeOf returns err's Code (CodeInternal for an error from elsewhere).
func CodeOf(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	if errors.Is(err, ErrNotSupported) {
		return CodeNotSupported
	}
	return CodeInternal
}

// Reasons a connection ends by the core's decision (Conn.Err).
var (
	ErrPeerExit = errors.New("the process that opened the connection has exited")
	ErrIdle     = errors.New("no subscription within the idle timeout")
	ErrShutdown = errors.New("notifyd is stopping")
	ErrClosed   = errors.New("connection closed")
)
