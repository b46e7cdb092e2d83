package fsm

import (
	"reflect"
	"strings"
	"testing"
)

func TestRegistryMatchesAllTypes(t *testing.T) {
	if len(allTypes) != len(commands) {
		t.Fatalf("allTypes lists %d command types, the registry has %d: update allTypes", len(allTypes), len(commands))
	}
	for _, typ := range allTypes {
		spec, ok := Spec(typ)
		if !ok {
			t.Errorf("Spec(%q): not registered", typ)
			continue
		}
		if spec.Since < 1 || spec.Since > Protocol {
			t.Errorf("%s: Since %d is outside 1..Protocol (%d)", typ, spec.Since, Protocol)
		}
		if got := spec.new().Type(); got != typ {
			t.Errorf("registry entry %s builds a %s", typ, got)
		}
	}
	if _, ok := Spec("no_such_command"); ok {
		t.Error("Spec accepted an unknown type")
	}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	for _, typ := range allTypes {
		t.Run(string(typ), func(t *testing.T) {
			want := sampleCommand(typ)
			b := mustEncode(t, want)
			if b[0] != encodingVersion {
				t.Fatalf("first byte %d, want the encoding version %d", b[0], encodingVersion)
			}
			got, err := Decode(b)
			if err != nil {
				t.Fatalf("Decode: %v\nencoded: %s", err, b)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("round trip changed the command\n got: %#v\nwant: %#v", got, want)
			}
		})
	}
}

func TestDecodeRefuses(t *testing.T) {
	valid := string(mustEncode(t, &RemoveNode{Name: "n1"}))
	for _, tc := range []struct {
		name  string
		input string
		want  []string // substrings of the message
	}{
		{"empty input", "", []string{"(empty)", "not supported"}},
		{"wrong first byte", "\x02" + valid[1:], []string{"encoding 2", "not supported"}},
		{"JSON without the version byte", valid[1:], []string{"encoding 123"}},
		{"invalid JSON", "\x01{\"type\":", []string{"decoding command"}},
		{"not an object", "\x01[1,2]", []string{"decoding command"}},
		{"unknown command type", "\x01" + `{"type":"frobnicate","body":{}}`, []string{`unknown command type "frobnicate"`, "protocol"}},
		{"unknown field in the body", "\x01" + `{"type":"remove_node","body":{"name":"n1","colour":"red"}}`, []string{"remove_node", `unknown field "colour"`}},
		{"body of the wrong type", "\x01" + `{"type":"remove_node","body":[1]}`, []string{"remove_node"}},
		{"missing body", "\x01" + `{"type":"remove_node"}`, []string{"remove_node"}},
		{"unknown field in the envelope", "\x01" + `{"type":"remove_node","body":{"name":"n1"},"extra":1}`, []string{"decoding command", `unknown field "extra"`}},
		{"trailing value", valid + `{"type":"remove_node","body":{"name":"n2"}}`, []string{"trailing data"}},
		{"trailing garbage", valid + " x", []string{"trailing data"}},
		{"trailing closing brace", valid + "}", []string{"trailing data"}},
		{"trailing closing bracket", valid + " ]", []string{"trailing data"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Decode([]byte(tc.input))
			if err == nil {
				t.Fatalf("Decode(%q) = %#v, want an error", tc.input, c)
			}
			if c != nil {
				t.Errorf("Decode returned a command along with the error: %#v", c)
			}
			if code := CodeOf(err); code != CodeUnsupported {
				t.Errorf("code %q, want %q (error: %v)", code, CodeUnsupported, err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("message %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestDecodeAcceptsWhitespaceAfterTheValue(t *testing.T) {
	b := append(mustEncode(t, &RemoveNode{Name: "n1"}), " \n\t"...)
	if _, err := Decode(b); err != nil {
		t.Fatalf("Decode with trailing whitespace: %v", err)
	}
}

func TestCheckDecodable(t *testing.T) {
	current := []Peer{{Name: "n1", Protocol: Protocol}, {Name: "n2", Protocol: Protocol}}
	mixed := []Peer{{Name: "n1", Protocol: Protocol}, {Name: "old-node", Protocol: 1}}
	for _, tc := range []struct {
		name  string
		typ   CommandType
		peers []Peer
		code  Code     // "" for accepted
		want  []string // substrings of the message
	}{
		{"import, every peer current", TypeImport, current, "", nil},
		{"import, no peers", TypeImport, nil, "", nil},
		{"protocol-1 command, protocol-1 peer", TypeCreateLUN, mixed, "", nil},
		{"restore, protocol-1 peer", TypeRestore, mixed, "", nil},
		{"import, protocol-1 peer", TypeImport, mixed, CodeUnsupported, []string{"old-node (protocol 1)", "upgrade", "import", "protocol 2"}},
		{"unknown type", "frobnicate", current, CodeUnsupported, []string{`"frobnicate"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckDecodable(tc.typ, tc.peers)
			if tc.code == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted, want an error")
			}
			if code := CodeOf(err); code != tc.code {
				t.Errorf("code %q, want %q (error: %v)", code, tc.code, err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("message %q does not mention %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "n1") {
				t.Errorf("message %q names a peer that is up to date", err)
			}
		})
	}
}

func TestCheckDecodableNamesEveryPeerBehindInOrder(t *testing.T) {
	err := CheckDecodable(TypeImport, []Peer{{Name: "zed", Protocol: 1}, {Name: "amy", Protocol: 1}, {Name: "new", Protocol: Protocol}})
	if err == nil {
		t.Fatal("accepted")
	}
	msg := err.Error()
	a, z := strings.Index(msg, "amy (protocol 1)"), strings.Index(msg, "zed (protocol 1)")
	if a < 0 || z < 0 || a > z {
		t.Fatalf("message %q should list amy then zed", msg)
	}
}

func TestCodeOf(t *testing.T) {
	if got := CodeOf(nil); got != "" {
		t.Errorf("CodeOf(nil) = %q", got)
	}
	wrapped := &Error{Code: CodeConflict, Msg: "x"}
	if got := CodeOf(wrapErr{wrapped}); got != CodeConflict {
		t.Errorf("CodeOf(wrapped) = %q, want conflict", got)
	}
}

type wrapErr struct{ err error }

func (w wrapErr) Error() string { return "wrapped: " + w.err.Error() }
func (w wrapErr) Unwrap() error { return w.err }
