package server

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

// The monitor's hand-written JSON must read what berthd's encoding/json
// writes, and write what it reads, byte for byte.

// tricky strings: escapes, HTML characters, line separators, non-ASCII,
// invalid UTF-8 (which encoding/json turns into U+FFFD).
var jsonStrings = []string{
	"", "a", "/var/lib/berth/pods/0123456789abcdef/containers/x", `quote " and \ backslash`,
	"<tag> & amp", "ctl \x00\x01\x1f\b\f\n\r\t\x7f", "line\u2028sep\u2029para", "ünïcødé ☃ 🐳",
	"bad \xff utf8 \xc3", "\xed\xa0\x80 surrogate bytes", strings.Repeat("long ", 300),
}

func randString(rnd *rand.Rand) string {
	if rnd.IntN(3) == 0 {
		return jsonStrings[rnd.IntN(len(jsonStrings))]
	}
	const alphabet = "ab/<>&\"\\\x00\n\x1f é☃🐳\u2028\xff"
	n := rnd.IntN(20)
	var b strings.Builder
	for range n {
		i := rnd.IntN(len(alphabet))
		b.WriteByte(alphabet[i])
	}
	return b.String()
}

func randTime(rnd *rand.Rand) time.Time {
	switch rnd.IntN(4) {
	case 0:
		return time.Time{}
	case 1:
		return time.Now()
	case 2:
		return time.Unix(rnd.Int64N(4e9), rnd.Int64N(1e9)).In(time.FixedZone("x", rnd.IntN(48)*1800-12*3600))
	}
	return time.Unix(rnd.Int64N(4e9), 0).UTC()
}

func randState(rnd *rand.Rand) *State {
	return &State{
		ID: randString(rnd), Status: randString(rnd),
		Pid: rnd.IntN(3) * rnd.IntN(1<<22), PidStart: uint64(rnd.IntN(2)) * rnd.Uint64(),
		ExitCode: rnd.IntN(3) * (rnd.IntN(512) - 128), Signal: rnd.IntN(2) * rnd.IntN(65),
		Reason: randString(rnd), Message: randString(rnd),
		CreatedAt: randTime(rnd), StartedAt: randTime(rnd), FinishedAt: randTime(rnd),
	}
}

func TestJSONEncodeMatchesEncodingJSON(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 2000; i++ {
		st := randState(rnd)
		want, err := json.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		if got := st.appendJSON(nil); !bytes.Equal(got, want) {
			t.Fatalf("State %+v:\n got %s\nwant %s", st, got, want)
		}
		resp := &Response{Error: randString(rnd), Kind: randString(rnd), Pid: rnd.IntN(2) * rnd.IntN(1<<22), PidNS: randString(rnd)}
		if rnd.IntN(2) == 0 {
			resp.State = st
		}
		want, _ = json.Marshal(resp)
		if got := resp.appendJSON(nil); !bytes.Equal(got, want) {
			t.Fatalf("Response:\n got %s\nwant %s", got, want)
		}
		rm := &ReadyMessage{Pid: rnd.IntN(2) * rnd.IntN(1<<22), PidNS: randString(rnd), Error: randString(rnd)}
		want, _ = json.Marshal(rm)
		if got := rm.appendJSON(nil); !bytes.Equal(got, want) {
			t.Fatalf("ReadyMessage:\n got %s\nwant %s", got, want)
		}
	}
}

func TestJSONDecodeRequestMatchesEncodingJSON(t *testing.T) {
	rnd := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 2000; i++ {
		req := &Request{
			Op: randString(rnd), ID: randString(rnd), Bundle: randString(rnd), LogPath: randString(rnd),
			Stdin: rnd.IntN(2) == 0, StdinOnce: rnd.IntN(2) == 0, Tty: rnd.IntN(2) == 0,
			Stdout: rnd.IntN(2) == 0, Stderr: rnd.IntN(2) == 0,
			Signal: rnd.IntN(2) * (rnd.IntN(200) - 100), Width: uint16(rnd.Uint32()), Height: uint16(rnd.Uint32()),
		}
		if rnd.IntN(2) == 0 {
			req.Runtime = &OCIRuntime{Path: randString(rnd), Root: randString(rnd)}
			for range rnd.IntN(4) {
				req.Runtime.Args = append(req.Runtime.Args, randString(rnd))
			}
		}
		b, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		if rnd.IntN(4) == 0 {
			// Whitespace and members this side does not know are allowed.
			var m map[string]any
			json.Unmarshal(b, &m)
			m["future"] = map[string]any{"a": []any{1.5, -2e10, nil, true, "x", map[string]any{}}}
			b, _ = json.MarshalIndent(m, " ", "\t")
		}
		var want, got Request
		if err := json.Unmarshal(b, &want); err != nil {
			t.Fatal(err)
		}
		if err := decodeRequest(b, &got); err != nil {
			t.Fatalf("decodeRequest(%s): %v", b, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("decodeRequest(%s):\n got %+v\nwant %+v", b, got, want)
		}
	}
}

func TestJSONDecodeEscapes(t *testing.T) {
	for _, in := range []string{
		`{"id":"\u00e9\u0041\ud83d\udc33\/\b\f\n\r\t\"\\"}`,
		`{"id":"lone \ud800 half"}`,
		`{"id":"lone \udc00 low"}`,
		`{"id":"\ud800\u0041 bad pair"}`,
		`{"id":"\uD83D\uDC33 upper hex"}`,
		`{"id":null,"op":"x"}`,
		`{}`,
		` { "id" : "x" , "runtime" : null } `,
	} {
		var want, got Request
		if err := json.Unmarshal([]byte(in), &want); err != nil {
			t.Fatalf("encoding/json rejects %s: %v", in, err)
		}
		if err := decodeRequest([]byte(in), &got); err != nil {
			t.Fatalf("decodeRequest(%s): %v", in, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("decodeRequest(%s):\n got %+v\nwant %+v", in, got, want)
		}
	}
}

func TestJSONDecodeRejects(t *testing.T) {
	for _, in := range []string{
		``, `null`, `[]`, `{`, `{"id"}`, `{"id":}`, `{"id":"x"`, `{"id":"x",}`, `{"id":"x"}x`,
		`{"id":"x` + "\n" + `"}`, `{"id":"\x"}`, `{"id":"\u12"}`, `{"id":1}`, `{"signal":"9"}`,
		`{"signal":1.5}`, `{"width":70000}`, `{"width":-1}`, `{"tty":1}`, `{"runtime":{"args":"x"}}`,
		`{"x":tru}`, `{"x":[1,]}`, `{"x":{"a" 1}}`, `{"x":-}`, `{"x":1e}`,
	} {
		var req Request
		if err := decodeRequest([]byte(in), &req); err == nil {
			t.Errorf("decodeRequest(%s) accepted it: %+v", in, req)
		}
	}
}

func TestDecodeSyncMsg(t *testing.T) {
	// As runtime/container's init writes them.
	for _, tc := range []struct {
		in   string
		want syncMsg
	}{
		{`{"type":"pid","pid":4242}`, syncMsg{Type: "pid", Pid: 4242}},
		{`{"type":"created"}`, syncMsg{Type: "created"}},
		{`{"type":"error","message":"exec \"nope\": no such file \u003cx\u003e","code":127}`, syncMsg{Type: "error", Message: `exec "nope": no such file <x>`}},
	} {
		var m syncMsg
		if err := decodeSyncMsg([]byte(tc.in), &m); err != nil || m != tc.want {
			t.Errorf("decodeSyncMsg(%s) = %+v, %v; want %+v", tc.in, m, err, tc.want)
		}
	}
}

func TestErrorFromLog(t *testing.T) {
	p := t.TempDir() + "/log.json"
	// runc's log: logrus JSON lines; the last error wins; lines that are
	// not JSON are skipped.
	log := `{"level":"info","msg":"starting","time":"2026-01-01T00:00:00Z"}
not json
{"level":"error","msg":"first","time":"2026-01-01T00:00:00Z","nested":{"a":[1,2]}}
{"level":"warning","msg":"warn"}
{"level":"error","msg":"  runc create failed: unable to start container process: exec: \"nope\": executable file not found in $PATH\n","time":"2026-01-01T00:00:01Z"}
{"level":"debug","msg":"done"}`
	if err := os.WriteFile(p, []byte(log), 0o600); err != nil {
		t.Fatal(err)
	}
	want := `runc create failed: unable to start container process: exec: "nope": executable file not found in $PATH`
	if got := ErrorFromLog(p); got != want {
		t.Errorf("ErrorFromLog = %q, want %q", got, want)
	}
	if got := ErrorFromLog(p + ".missing"); got != "" {
		t.Errorf("ErrorFromLog of no file = %q", got)
	}
}

// FuzzDecodeRequest: whatever encoding/json makes of a request, this side
// reads the same from encoding/json's encoding of it; and this side accepts
// only valid JSON (and never panics).
func FuzzDecodeRequest(f *testing.F) {
	for _, s := range jsonStrings {
		b, _ := json.Marshal(&Request{Op: s, ID: s, Runtime: &OCIRuntime{Args: []string{s}}})
		f.Add(b)
	}
	f.Add([]byte(`{"signal":9,"width":80,"tty":true,"x":[{"y":null}],"runtime":{"path":"/r","args":["a"]}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var req Request
		if decodeRequest(b, &req) == nil && !json.Valid(b) {
			t.Fatalf("decodeRequest accepted invalid JSON %q", b)
		}
		var want Request
		if json.Unmarshal(b, &want) != nil {
			return
		}
		enc, err := json.Marshal(&want)
		if err != nil {
			t.Fatal(err)
		}
		var got Request
		if err := decodeRequest(enc, &got); err != nil {
			t.Fatalf("decodeRequest(%s): %v", enc, err)
		}
		if want.Runtime != nil && got.Runtime != nil && len(want.Runtime.Args) == 0 && len(got.Runtime.Args) == 0 {
			want.Runtime.Args = got.Runtime.Args // nil or empty: both mean none
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("decodeRequest(%s):\n got %+v\nwant %+v", enc, got, want)
		}
	})
}
