package pdu

import (
	"bytes"
	"errors"
	"fmt"
)

// KV is one text key=value pair of a Login or Text PDU.
type KV struct {
	Key, Value string
}

// Limits from RFC 7143 6.1: a key name is at most 63 bytes; values are at most
// 255 bytes except binary/large values, which may reach 8192 (CHAP_C/CHAP_R
// with long hashes, SendTargets answers).
const (
	MaxKeyLen   = 63
	MaxValueLen = 8192
)

// ErrText reports malformed text data.
var ErrText = errors.New("malformed text key")

// ParseText splits a text data segment into key=value pairs, in order. A
// trailing pair without its NUL terminator is accepted, since the last PDU of
// a sequence may omit it; padding NULs are skipped.
func ParseText(data []byte) ([]KV, error) {
	var kvs []KV
	for len(data) > 0 {
		end := bytes.IndexByte(data, 0)
		item := data
		if end >= 0 {
			item, data = data[:end], data[end+1:]
		} else {
			data = nil
		}
		if len(item) == 0 {
			continue
		}
		eq := bytes.IndexByte(item, '=')
		if eq <= 0 {
			return nil, fmt.Errorf("%w: %q has no key=value form", ErrText, truncate(item))
		}
		if eq > MaxKeyLen {
			return nil, fmt.Errorf("%w: key longer than %d bytes", ErrText, MaxKeyLen)
		}
		if len(item)-eq-1 > MaxValueLen {
			return nil, fmt.Errorf("%w: value of %q longer than %d bytes", ErrText, item[:eq], MaxValueLen)
		}
		kvs = append(kvs, KV{Key: string(item[:eq]), Value: string(item[eq+1:])})
	}
	return kvs, nil
}

// AppendText appends key=value and its NUL terminator to dst.
func AppendText(dst []byte, key, value string) []byte {
	dst = append(dst, key...)
	dst = append(dst, '=')
	dst = append(dst, value...)
	return append(dst, 0)
}

func truncate(b []byte) string {
	if len(b) > 32 {
		return string(b[:32]) + "..."
	}
	return string(b)
}
