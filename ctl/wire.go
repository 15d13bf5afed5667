package ctl

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/notifyd/notifyd/api"
)

// This file reads server messages in one pass: notifyctl scans a frame's
// top level once, takes the type and, for a batch, the span of each item,
// and then either prints the item's bytes as they came (--json) or
// decodes the item once into the event it prints. Nothing is decoded
// twice and nothing is re-encoded.

// frame is one scanned server message. items are sub-slices of the
// frame's bytes (valid until the next read).
type frame struct {
	typ   api.MessageType
	items [][]byte
}

// scanFrame scans message b into f, reusing f.items. A batch's "events"
// is required to be an array of objects; other messages only need a
// string "type".
func scanFrame(b []byte, f *frame) error {
	f.typ, f.items = "", f.items[:0]
	sawEvents := false
	err := eachMember(b, func(key, val []byte) error {
		switch string(key) {
		case "type":
			s, err := jsonString(val)
			if err != nil {
				return fmt.Errorf("type: %w", err)
			}
			f.typ = api.MessageType(s)
		case "events":
			sawEvents = true
			return eachElement(val, func(it []byte) error {
				if len(it) == 0 || it[0] != '{' {
					return errors.New("batch item is not an object")
				}
				f.items = append(f.items, it)
				return nil
			})
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("decode server message: %w", err)
	}
	if f.typ == "" {
		return errors.New(`decode server message: missing "type"`)
	}
	if f.typ == api.TypeBatch && !sawEvents {
		return errors.New(`decode server message batch: missing "events"`)
	}
	return nil
}

// itemInfo is what the monitor needs of an item it prints as it came:
// where it is in the stream and whether it counts as an event.
type itemInfo struct {
	snapshot, loss bool
	seq, toSeq     uint64
}

// scanItem reads an event item's "type", "seq" and "loss"."to_seq".
func scanItem(b []byte) (itemInfo, error) {
	var in itemInfo
	err := eachMember(b, func(key, val []byte) error {
		switch string(key) {
		case "type":
			s, err := jsonString(val)
			if err != nil {
				return err
			}
			in.snapshot = s == string(api.TypeSnapshot)
		case "seq":
			v, err := strconv.ParseUint(string(val), 10, 64)
			if err != nil {
				return fmt.Errorf("seq: %w", err)
			}
			in.seq = v
		case "loss":
			if string(val) == "null" {
				return nil
			}
			in.loss = true
			return eachMember(val, func(k, v []byte) error {
				if string(k) == "to_seq" {
					n, err := strconv.ParseUint(string(v), 10, 64)
					if err != nil {
						return fmt.Errorf("to_seq: %w", err)
					}
					in.toSeq = n
				}
				return nil
			})
		}
		return nil
	})
	if err != nil {
		return in, fmt.Errorf("decode event: %w", err)
	}
	return in, nil
}

// eachMember calls fn with the raw key (without quotes; escapes left as
// they are, which no member notifyctl looks for has) and the raw value of
// every member of the JSON object b, which must be all of b but for
// white space.
func eachMember(b []byte, fn func(key, val []byte) error) error {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return errors.New("not a JSON object")
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return trailing(b, i+1)
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return errors.New("object key expected")
		}
		end, err := skipString(b, i)
		if err != nil {
			return err
		}
		key := b[i+1 : end-1]
		i = skipSpace(b, end)
		if i >= len(b) || b[i] != ':' {
			return errors.New("':' expected after an object key")
		}
		i = skipSpace(b, i+1)
		vend, err := skipValue(b, i, 0)
		if err != nil {
			return err
		}
		if err := fn(key, b[i:vend]); err != nil {
			return err
		}
		i = skipSpace(b, vend)
		if i >= len(b) {
			return errors.New("unterminated object")
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case '}':
			return trailing(b, i+1)
		default:
			return errors.New("',' or '}' expected in an object")
		}
	}
}

// eachElement calls fn with every element of the JSON array b.
func eachElement(b []byte, fn func(el []byte) error) error {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '[' {
		return errors.New("not a JSON array")
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == ']' {
		return trailing(b, i+1)
	}
	for {
		end, err := skipValue(b, i, 0)
		if err != nil {
			return err
		}
		if err := fn(b[i:end]); err != nil {
			return err
		}
		i = skipSpace(b, end)
		if i >= len(b) {
			return errors.New("unterminated array")
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case ']':
			return trailing(b, i+1)
		default:
			return errors.New("',' or ']' expected in an array")
		}
	}
}

func trailing(b []byte, i int) error {
	if skipSpace(b, i) != len(b) {
		return errors.New("data after the JSON value")
	}
	return nil
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// maxDepth bounds nesting, as encoding/json does (10000); the protocol
// nests three levels.
const maxDepth = 10000

// skipValue returns the end of the JSON value starting at b[i].
func skipValue(b []byte, i, depth int) (int, error) {
	if i >= len(b) {
		return 0, errors.New("value expected")
	}
	switch c := b[i]; {
	case c == '"':
		return skipString(b, i)
	case c == '{' || c == '[':
		if depth >= maxDepth {
			return 0, errors.New("nested too deeply")
		}
		closer := byte('}')
		if c == '[' {
			closer = ']'
		}
		i = skipSpace(b, i+1)
		if i < len(b) && b[i] == closer {
			return i + 1, nil
		}
		for {
			if c == '{' {
				if i >= len(b) || b[i] != '"' {
					return 0, errors.New("object key expected")
				}
				end, err := skipString(b, i)
				if err != nil {
					return 0, err
				}
				i = skipSpace(b, end)
				if i >= len(b) || b[i] != ':' {
					return 0, errors.New("':' expected after an object key")
				}
				i = skipSpace(b, i+1)
			}
			end, err := skipValue(b, i, depth+1)
			if err != nil {
				return 0, err
			}
			i = skipSpace(b, end)
			if i >= len(b) {
				return 0, errors.New("unterminated " + map[byte]string{'{': "object", '[': "array"}[c])
			}
			if b[i] == closer {
				return i + 1, nil
			}
			if b[i] != ',' {
				return 0, fmt.Errorf("',' or '%c' expected", closer)
			}
			i = skipSpace(b, i+1)
		}
	case c == '-' || c >= '0' && c <= '9':
		return skipNumber(b, i)
	default:
		for _, lit := range []string{"true", "false", "null"} {
			if bytes.HasPrefix(b[i:], []byte(lit)) {
				return i + len(lit), nil
			}
		}
		return 0, fmt.Errorf("unexpected %q", c)
	}
}

// skipString returns the end (after the closing quote) of the string
// starting at b[i] == '"'.
func skipString(b []byte, i int) (int, error) {
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			return j + 1, nil
		case c == '\\':
			j++
			if j >= len(b) {
				break
			}
			switch b[j] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if j+4 >= len(b) || !isHex(b[j+1]) || !isHex(b[j+2]) || !isHex(b[j+3]) || !isHex(b[j+4]) {
					return 0, errors.New("bad \\u escape in a string")
				}
				j += 4
			default:
				return 0, fmt.Errorf("bad escape \\%c in a string", b[j])
			}
		case c < 0x20:
			return 0, errors.New("control character in a string")
		}
	}
	return 0, errors.New("unterminated string")
}

// jsonString returns the JSON string val unquoted.
func jsonString(val []byte) (string, error) {
	if len(val) < 2 || val[0] != '"' {
		return "", errors.New("string expected")
	}
	if bytes.IndexByte(val, '\\') < 0 {
		return string(val[1 : len(val)-1]), nil
	}
	var s string
	if err := json.Unmarshal(val, &s); err != nil {
		return "", err
	}
	return s, nil
}

// skipNumber returns the end of the JSON number starting at b[i]:
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func skipNumber(b []byte, i int) (int, error) {
	start := i
	digits := func() bool {
		j := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		return i > j
	}
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case !digits():
		return 0, fmt.Errorf("bad number at %d", start)
	}
	if i < len(b) && b[i] == '.' {
		i++
		if !digits() {
			return 0, fmt.Errorf("bad number at %d", start)
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if !digits() {
			return 0, fmt.Errorf("bad number at %d", start)
		}
	}
	return i, nil
}

func isHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' }
