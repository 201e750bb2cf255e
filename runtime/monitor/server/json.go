package server

import (
	"errors"
	"strconv"
	"strings"
	"time"
	"unicode/utf16"
	"unicode/utf8"
)

// The monitor speaks JSON (to berthd, which uses encoding/json, and with
// container init and OCI runtimes), but encoding/json and the reflection
// behind it would be linked into this process, which runs once per pod:
// they made up a fifth of its resident size. So the monitor reads and
// writes its few flat message types by hand, here. json_test.go checks
// both directions against encoding/json.

// jsonWriter appends one JSON object. Fields come out in the order they are
// written, which follows the struct declarations, so the bytes equal what
// encoding/json writes for the same value.
type jsonWriter struct {
	b []byte
}

func (w *jsonWriter) begin() { w.b = append(w.b, '{') }
func (w *jsonWriter) end()   { w.b = append(w.b, '}') }

func (w *jsonWriter) key(k string) {
	if n := len(w.b); n > 0 && w.b[n-1] != '{' {
		w.b = append(w.b, ',')
	}
	w.b = append(w.b, '"')
	w.b = append(w.b, k...)
	w.b = append(w.b, '"', ':')
}

// str writes a string field; with omitEmpty an empty string is left out.
func (w *jsonWriter) str(k, v string, omitEmpty bool) {
	if omitEmpty && v == "" {
		return
	}
	w.key(k)
	w.b = appendJSONString(w.b, v)
}

func (w *jsonWriter) int(k string, v int64, omitEmpty bool) {
	if omitEmpty && v == 0 {
		return
	}
	w.key(k)
	w.b = strconv.AppendInt(w.b, v, 10)
}

func (w *jsonWriter) uint(k string, v uint64, omitEmpty bool) {
	if omitEmpty && v == 0 {
		return
	}
	w.key(k)
	w.b = strconv.AppendUint(w.b, v, 10)
}

// time writes t as time.Time.MarshalJSON does (RFC 3339 with nanoseconds).
// The monitor's times come from time.Now, so they are always in the years
// MarshalJSON accepts.
func (w *jsonWriter) time(k string, t time.Time) {
	w.key(k)
	w.b = append(w.b, '"')
	w.b = t.AppendFormat(w.b, time.RFC3339Nano)
	w.b = append(w.b, '"')
}

const hexDigits = "0123456789abcdef"

// appendJSONString quotes s as encoding/json does: HTML-safe (<, >, & and
// U+2028/U+2029 escaped) and with invalid UTF-8 replaced by U+FFFD.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// errJSON is the error of any malformed or unexpected JSON input.
var errJSON = errors.New("malformed JSON")

// jsonReader reads JSON values from b. The first error sticks: later calls
// do nothing, and err tells what went wrong.
type jsonReader struct {
	b   []byte
	i   int
	err error
}

func (r *jsonReader) fail(what string) {
	if r.err == nil {
		r.err = &wrapError{msg: what + " at offset " + strconv.Itoa(r.i), err: errJSON}
	}
	r.i = len(r.b)
}

func (r *jsonReader) space() {
	for r.i < len(r.b) {
		switch r.b[r.i] {
		case ' ', '\t', '\n', '\r':
			r.i++
		default:
			return
		}
	}
}

// peek returns the next non-space byte, 0 at the end.
func (r *jsonReader) peek() byte {
	r.space()
	if r.i >= len(r.b) {
		return 0
	}
	return r.b[r.i]
}

func (r *jsonReader) expect(c byte) {
	if r.peek() != c {
		r.fail("expected " + strconv.QuoteRune(rune(c)))
		return
	}
	r.i++
}

// literal consumes word (true, false, null) if it comes next.
func (r *jsonReader) literal(word string) bool {
	r.space()
	if len(r.b)-r.i >= len(word) && string(r.b[r.i:r.i+len(word)]) == word {
		r.i += len(word)
		return true
	}
	return false
}

// object calls field for each member of an object, which must read (or
// skip) the member's value. null stands for an empty object.
func (r *jsonReader) object(field func(key string)) {
	if r.literal("null") {
		return
	}
	r.expect('{')
	if r.peek() == '}' {
		r.i++
		return
	}
	for r.err == nil {
		k := r.str()
		r.expect(':')
		if r.err != nil {
			return
		}
		field(k)
		switch r.peek() {
		case ',':
			r.i++
		case '}':
			r.i++
			return
		default:
			r.fail("expected , or }")
		}
	}
}

// array calls elem for each element of an array (null: none).
func (r *jsonReader) array(elem func()) {
	if r.literal("null") {
		return
	}
	r.expect('[')
	if r.peek() == ']' {
		r.i++
		return
	}
	for r.err == nil {
		elem()
		switch r.peek() {
		case ',':
			r.i++
		case ']':
			r.i++
			return
		default:
			r.fail("expected , or ]")
		}
	}
}

// str reads a string (null reads as "").
func (r *jsonReader) str() string {
	if r.literal("null") {
		return ""
	}
	r.expect('"')
	if r.err != nil {
		return ""
	}
	start := r.i
	// The common case: ASCII without escapes, one allocation.
	for r.i < len(r.b) {
		c := r.b[r.i]
		if c == '"' {
			s := string(r.b[start:r.i])
			r.i++
			return s
		}
		if c == '\\' || c < 0x20 || c >= utf8.RuneSelf {
			break
		}
		r.i++
	}
	out := append([]byte(nil), r.b[start:r.i]...)
	for r.i < len(r.b) {
		c := r.b[r.i]
		switch {
		case c == '"':
			r.i++
			return string(out)
		case c < 0x20:
			r.fail("control character in string")
			return ""
		case c >= utf8.RuneSelf:
			// Invalid UTF-8 reads as U+FFFD, as in encoding/json.
			d, size := utf8.DecodeRune(r.b[r.i:])
			out = utf8.AppendRune(out, d)
			r.i += size
			continue
		case c != '\\':
			out = append(out, c)
			r.i++
			continue
		}
		r.i++
		if r.i >= len(r.b) {
			break
		}
		e := r.b[r.i]
		r.i++
		switch e {
		case '"', '\\', '/':
			out = append(out, e)
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			c1 := r.hex4()
			if utf16.IsSurrogate(c1) {
				// A pair is two escapes; a lone half is U+FFFD, as in
				// encoding/json.
				if r.i+1 < len(r.b) && r.b[r.i] == '\\' && r.b[r.i+1] == 'u' {
					save := r.i
					r.i += 2
					c2 := r.hex4()
					if d := utf16.DecodeRune(c1, c2); d != utf8.RuneError {
						out = utf8.AppendRune(out, d)
						continue
					}
					r.i = save
				}
				c1 = utf8.RuneError
			}
			out = utf8.AppendRune(out, c1)
		default:
			r.fail("bad escape in string")
			return ""
		}
	}
	r.fail("unterminated string")
	return ""
}

func (r *jsonReader) hex4() rune {
	if len(r.b)-r.i < 4 {
		r.fail("short \\u escape")
		return 0
	}
	var v rune
	for _, c := range r.b[r.i : r.i+4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			r.fail("bad \\u escape")
			return 0
		}
		v = v<<4 | rune(c)
	}
	r.i += 4
	return v
}

// number returns the text of a number:
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (r *jsonReader) number() string {
	r.space()
	start := r.i
	digits := func() int {
		n := 0
		for r.i < len(r.b) && '0' <= r.b[r.i] && r.b[r.i] <= '9' {
			r.i++
			n++
		}
		return n
	}
	next := func(set string) bool {
		if r.i < len(r.b) && strings.IndexByte(set, r.b[r.i]) >= 0 {
			r.i++
			return true
		}
		return false
	}
	next("-")
	if !next("0") && digits() == 0 {
		r.fail("expected a number")
		return ""
	}
	if next(".") && digits() == 0 {
		r.fail("expected digits after .")
		return ""
	}
	if next("eE") {
		next("+-")
		if digits() == 0 {
			r.fail("expected an exponent")
			return ""
		}
	}
	return string(r.b[start:r.i])
}

// int reads an integer of bits bits (null reads as 0).
func (r *jsonReader) int(bits int) int64 {
	if r.literal("null") {
		return 0
	}
	s := r.number()
	if r.err != nil {
		return 0
	}
	v, err := strconv.ParseInt(s, 10, bits)
	if err != nil {
		r.fail("bad integer " + strconv.Quote(s))
	}
	return v
}

func (r *jsonReader) uint(bits int) uint64 {
	if r.literal("null") {
		return 0
	}
	s := r.number()
	if r.err != nil {
		return 0
	}
	v, err := strconv.ParseUint(s, 10, bits)
	if err != nil {
		r.fail("bad unsigned integer " + strconv.Quote(s))
	}
	return v
}

// bool reads true or false (null reads as false).
func (r *jsonReader) bool() bool {
	switch {
	case r.literal("true"):
		return true
	case r.literal("false"), r.literal("null"):
		return false
	}
	r.fail("expected true or false")
	return false
}

// skip reads and drops any value.
func (r *jsonReader) skip() {
	switch c := r.peek(); {
	case c == '{':
		r.object(func(string) { r.skip() })
	case c == '[':
		r.array(r.skip)
	case c == '"':
		r.str()
	case c == '-' || ('0' <= c && c <= '9'):
		r.number()
	case r.literal("true"), r.literal("false"), r.literal("null"):
	default:
		r.fail("unexpected character")
	}
}

// decodeJSON reads b, which must hold one JSON object and nothing else, and
// calls field for each member.
func decodeJSON(b []byte, field func(r *jsonReader, key string)) error {
	r := &jsonReader{b: b}
	if r.peek() != '{' {
		r.fail("expected an object")
		return r.err
	}
	r.object(func(k string) { field(r, k) })
	if r.space(); r.err == nil && r.i < len(r.b) {
		r.fail("data after the object")
	}
	return r.err
}
