package scstconf

import (
	"bytes"
	"errors"
	"reflect"
	"testing"

	"github.com/hatarget/hatarget/fsm"
)

// FuzzParse checks that Parse never panics, fails only with *Error, and
// that whatever it accepts survives Format and a second Parse unchanged.
func FuzzParse(f *testing.F) {
	for _, src := range roundTripInputs {
		f.Add([]byte(src))
	}
	for _, src := range []string{
		"TARGET_DRIVER iscsi {\n\tIncomingUser \"joe secret\n}\n",
		"HANDLER dev_disk {\n\tDEVICE 1:0:0:0\n}\n",
		"a {b {c {d {e {f {g {h {i {\n",
		"HANDLER vdisk_nullio { DEVICE n { size_mb 1 size 1048576 } }",
		"}\n{",
		`HANDLER vdisk_fileio { DEVICE d { filename "\\" } }`,
	} {
		f.Add([]byte(src))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		f1, err := Parse("fuzz", data)
		if err != nil {
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("error %v is %T, not *Error", err, err)
			}
			if f1 != nil {
				t.Fatal("Parse returned a File along with an error")
			}
			return
		}
		out := Format(f1)
		f2, err := Parse("formatted", out)
		if err != nil {
			t.Fatalf("Format output does not parse: %v\ninput:\n%q\noutput:\n%s", err, data, out)
		}
		if !f1.Equal(f2) {
			t.Fatalf("round trip changed the model\ninput:\n%q\noutput:\n%s\nfirst:  %+v\nsecond: %+v", data, out, f1, f2)
		}
		if again := Format(f2); !bytes.Equal(out, again) {
			t.Fatalf("Format is not a fixed point:\n%s\n---\n%s", out, again)
		}
	})
}

// FuzzQuote checks that every value Format may write is read back as one
// word with the same text; values with newlines are rejected by Validate
// before they get here.
func FuzzQuote(f *testing.F) {
	for _, s := range []string{"", "a b", `a\`, `\#`, `"#{}\`, "\t\v\r", "\ufeffx"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if bytes.ContainsRune([]byte(s), '\n') {
			t.Skip()
		}
		toks, err := lex("q", []byte(quote(s)))
		if err != nil {
			t.Fatalf("quote(%q) = %s: %v", s, quote(s), err)
		}
		if len(toks) != 2 || toks[0].kind != tWord || toks[0].text != s {
			t.Fatalf("quote(%q) = %s lexes to %+v", s, quote(s), toks)
		}
	})
}

// FuzzImportRoundTrip checks the conversion to and from the cluster state:
// ToImport fails only with a positioned *Error, the cluster applies what it
// accepts, and the state's export parses and imports back to the same
// command.
func FuzzImportRoundTrip(f *testing.F) {
	for _, src := range roundTripInputs {
		f.Add([]byte(src))
	}
	for _, src := range []string{
		richConfig,
		"HANDLER vdisk_nullio { DEVICE disk:1 }",
		"TARGET_DRIVER iscsi {\n\tenabled 0\n\tIncomingUser joe 12char\x00secret\n}\n",
		"HANDLER vdisk_nullio { DEVICE n }\nTARGET_DRIVER iscsi {\nTARGET iqn.a:b {\nGROUP g {\nINITIATOR \"i\\\"\"\nLUN 0 n\n}\n}\n}\n",
	} {
		f.Add([]byte(src))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		f1, err := Parse("fuzz", data)
		if err != nil {
			return
		}
		imp, _, err := ToImport(f1)
		if err != nil {
			var pe *Error
			if !errors.As(err, &pe) || !pe.Pos.IsValid() {
				t.Fatalf("error %v is not an *Error with a position\ninput:\n%q", err, data)
			}
			return
		}
		fillIdentities(imp)
		s, _, err := fsm.Empty().ApplyCommand(1, imp, fsm.Env{})
		if err != nil {
			t.Fatalf("ToImport accepted what the cluster refuses: %v\ninput:\n%q", err, data)
		}
		for _, showSecrets := range []bool{false, true} {
			out := Format(FromState(s, showSecrets))
			f2, err := Parse("exported", out)
			if err != nil {
				t.Fatalf("export does not parse: %v\ninput:\n%q\nexport:\n%s", err, data, out)
			}
			if !showSecrets {
				continue
			}
			imp2, _, err := ToImport(f2)
			if err != nil {
				t.Fatalf("export does not import: %v\nexport:\n%s", err, out)
			}
			if !reflect.DeepEqual(imp, imp2) {
				t.Fatalf("round trip changed the import\ninput:\n%q\nfirst:  %+v\nsecond: %+v", data, imp, imp2)
			}
		}
	})
}
