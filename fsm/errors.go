package fsm

import (
	"errors"
	"fmt"
)

// Code classifies why a command was refused, so that the API can answer
// with the right status without matching message text.
type Code string

const (
	CodeInvalid  Code = "invalid"   // the command itself is wrong
	CodeNotFound Code = "not_found" // it names something that does not exist
	CodeConflict Code = "conflict"  // it clashes with the current state
	// CodeUnsupported: a command type or field this binary cannot decode.
	CodeUnsupported Code = "unsupported"
)

// Error is a refused command. Apply returns the same Error on every node.
type Error struct {
	Code Code   `json:"code"`
	Msg  string `json:"message"`
}

func (e *Error) Error() string { return e.Msg }

func errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, args...)}
}

// CodeOf returns the Code of err, or "" when it is not an *Error.
func CodeOf(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}
