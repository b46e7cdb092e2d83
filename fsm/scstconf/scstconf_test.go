package scstconf

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// deploymentGuide is the example from the deployment guide the project grew
// out of (docs: /work/shared/design/scst-conf.md).
const deploymentGuide = `HANDLER vdisk_fileio {
    DEVICE disk01 {
        filename /dev/sdb1
        nv_cache 1
    }
    DEVICE disk02 {
        filename /dev/sdc1
        nv_cache 1
    }
}

TARGET_DRIVER iscsi {
    enabled 1
    TARGET iqn.2006-10.net.vlnb:tgt {
        LUN 0 disk01
        LUN 1 disk02
        enabled 1
    }
}
`

// manPage follows the example of SCST's scst.conf(5), minus the dev_disk
// and vcdrom handlers, which hatarget rejects.
const manPage = `# Sample SCST configuration file.
setup_id 0x1234

HANDLER vdisk_fileio {
	DEVICE disk1 {
		filename /disk1
		nv_cache 1
	}

	DEVICE disk2 {
		filename /disk2
		blocksize 4096
		removable 1
	}
}

HANDLER vdisk_blockio {
	DEVICE blockio1 {
		filename /dev/sda5
	}
}

HANDLER vdisk_nullio {
	DEVICE dummy {
		dummy 1
	}
}

TARGET_DRIVER scst_local {
	TARGET scst_local_tgt {
		session_name scst_local_host

		LUN 0 disk1
	}
}

TARGET_DRIVER iscsi {
	IncomingUser "joe 12charsecret"
	enabled 1

	TARGET iqn.2006-10.net.vlnb:tgt {
		IncomingUser "joe 12charsecret"
		IncomingUser "fred 12charsecret2"
		IncomingUser "jonas 12charsecret3"
		HeaderDigest CRC32C,None
		enabled 1

		LUN 0 disk1
		LUN 1 disk2
		LUN 2 blockio1 {
			read_only 1
		}
	}
}

TARGET_DRIVER qla2x00t {
	TARGET 25:00:00:f0:98:87:92:f3 {
		enabled 1
		LUN 0 dummy
	}
}

DEVICE_GROUP dgroup1 {
	DEVICE disk1

	TARGET_GROUP tgroup1 {
		group_id 1
		state active

		TARGET fe80:0000:0000:0000:0002:c903:0005:f34b {
			rel_tgt_id 1
		}
	}

	TARGET_GROUP tgroup2 {
		group_id 2
		state offline

		TARGET fe80:0000:0000:0000:0002:c903:0005:f34c {
			rel_tgt_id 2
		}
	}
}
`

// everything exercises each construct the model has, in awkward syntax.
const everything = "\ufeff" + `setup_id 7   # trailing comment
HANDLER vdisk_blockio
{
	DEVICE "blk0"
	{
		filename "/srv/disk images/a b.img"   # quoted, with spaces
		write_through 1
		o_direct 1
		thin_provisioned 1
		rotational 0
		t10_dev_id blk0-id
		t10_vend_id HATARGET
		prod_id "Virtual Disk"
		usn 0123456789
		naa_id 0x6001405abcdef012
		size_mb 1024
		size 1073741824
		cluster_mode 1
	}
}
HANDLER vdisk_nullio { DEVICE null0 { size 4096 } }
HANDLER vdisk_fileio {
	DEVICE f\#1 {
		filename C:\images\f1
		read_only 1
	}
}
HANDLER vdisk_nullio { DEVICE null1 }
TARGET_DRIVER iscsi {
	enabled 0
	IncomingUser disco 12charsecret
	OutgoingUser "target-id 12charsecretX"
	iSNSServer "192.168.1.16 AccessControl"
	TARGET iqn.2024-01.org.example:a {
		enabled 1
		rel_tgt_id 3
		IncomingUser1 "alice secretsecret1"
		IncomingUser2 "bob secretsecret2"
		OutgoingUser "tgt mutualsecret"
		HeaderDigest CRC32C
		DataDigest None
		MaxRecvDataSegmentLength 262144
		MaxXmitDataSegmentLength 65536
		ImmediateData Yes
		InitialR2T No
		FirstBurstLength 65536
		MaxBurstLength 1048576
		MaxOutstandingR2T 8
		QueuedCommands 128
		NopInInterval 30
		RspTimeout 90
		allowed_portal 10.0.0.*
		allowed_portal !10.0.0.9
		addr_method PERIPHERAL
		LUN 0 blk0 { read_only 1 }
		LUN 7 null0
		GROUP backup {
			LUN 0 f\#1 {
				read_only 1
			}
			LUN 1 null1
			INITIATOR iqn.1994-05.com.redhat:*
			INITIATOR "iqn.2024-01.org.example:host?"
			io_grouping_type auto
		}
		GROUP empty
	}
	TARGET iqn.2024-01.org.example:b
}
DEVICE_GROUP dg {
	DEVICE blk0
	DEVICE null0
	TARGET_GROUP local {
		group_id 256
		state active
		preferred 1
		TARGET iqn.2024-01.org.example:a
	}
	TARGET_GROUP remote {
		group_id 257
		state nonoptimized
		TARGET iqn.2024-01.org.example:remote {
			rel_tgt_id 2
		}
	}
}
DEVICE_GROUP lonely
`

func mustParse(t *testing.T, src string) *File {
	t.Helper()
	f, err := Parse("test.conf", []byte(src))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return f
}

func TestDeploymentGuideExample(t *testing.T) {
	f := mustParse(t, deploymentGuide)
	at := func(line, col int) Pos { return Pos{File: "test.conf", Line: line, Col: col} }
	want := &File{
		Devices: []Device{
			{Name: "disk01", Handler: HandlerFileIO, Filename: "/dev/sdb1", NVCache: true,
				Rotational: true, BlockSize: 512, Pos: at(2, 5)},
			{Name: "disk02", Handler: HandlerFileIO, Filename: "/dev/sdc1", NVCache: true,
				Rotational: true, BlockSize: 512, Pos: at(6, 5)},
		},
		ISCSIDriver: ISCSIDriver{Enabled: true, Pos: at(12, 1)},
		Targets: []Target{{
			Name:    "iqn.2006-10.net.vlnb:tgt",
			Enabled: true,
			LUNs: []LUN{
				{Number: 0, Device: "disk01", Pos: at(15, 9)},
				{Number: 1, Device: "disk02", Pos: at(16, 9)},
			},
			Pos: at(14, 5),
		}},
	}
	if !reflect.DeepEqual(f, want) {
		t.Errorf("got  %+v\nwant %+v", f, want)
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		name  string
		src   string
		check func(t *testing.T, f *File)
	}{
		{"quoted CHAP user splits into user and secret", `
TARGET_DRIVER iscsi {
	IncomingUser "joe 12charsecret"   # discovery
	IncomingUser bob   12charsecret2
}`, func(t *testing.T, f *File) {
			want := []CHAPUser{{"joe", "12charsecret", Pos{}}, {"bob", "12charsecret2", Pos{}}}
			got := f.ISCSIDriver.IncomingUsers
			if len(got) != 2 || got[0].User != want[0].User || got[0].Secret != want[0].Secret ||
				got[1].User != want[1].User || got[1].Secret != want[1].Secret {
				t.Errorf("IncomingUsers = %+v", got)
			}
		}},
		{"LUN with a one-line attribute block", `
HANDLER vdisk_blockio { DEVICE blockio1 { filename /dev/sda5 } }
TARGET_DRIVER iscsi { TARGET iqn.2006-10.net.vlnb:tgt { LUN 2 blockio1 { read_only 1 } } }`,
			func(t *testing.T, f *File) {
				l := f.Targets[0].LUNs[0]
				if l.Number != 2 || l.Device != "blockio1" || !l.ReadOnly {
					t.Errorf("LUN = %+v", l)
				}
			}},
		{"SCST defaults fill in silent attributes", `
HANDLER vdisk_nullio {
	DEVICE n
}
HANDLER vdisk_fileio {
	DEVICE f {
		filename /f
	}
}`, func(t *testing.T, f *File) {
			n, fl := f.Devices[0], f.Devices[1]
			if n.Size != DefaultNullIOSize || n.BlockSize != 512 || !n.Rotational {
				t.Errorf("nullio = %+v", n)
			}
			if fl.Size != 0 || fl.NVCache || fl.ReadOnly || !fl.Rotational {
				t.Errorf("fileio = %+v", fl)
			}
		}},
		{"size_mb is MiB", `HANDLER vdisk_nullio { DEVICE n { size_mb 3 } }`,
			func(t *testing.T, f *File) {
				if got := f.Devices[0].Size; got != 3<<20 {
					t.Errorf("Size = %d", got)
				}
			}},
		{"escaped hash is literal, bare hash comments", `
HANDLER vdisk_fileio {
	DEVICE d {
		filename /a\#b#c
		prod_id "x#y"
	}
}`, func(t *testing.T, f *File) {
			if d := f.Devices[0]; d.Filename != "/a#b" || d.ProdID != "x#y" {
				t.Errorf("Filename %q ProdID %q", d.Filename, d.ProdID)
			}
		}},
		{"CRLF line ends", "HANDLER vdisk_fileio {\r\n\tDEVICE d {\r\n\t\tfilename /d\r\n\t}\r\n}\r\n",
			func(t *testing.T, f *File) {
				if d := f.Devices[0]; d.Filename != "/d" {
					t.Errorf("Filename %q", d.Filename)
				}
			}},
		{"groups and ALUA", everything, func(t *testing.T, f *File) {
			tg := f.Targets[0]
			g := tg.Groups[0]
			if g.Name != "backup" || len(g.LUNs) != 2 || !g.LUNs[0].ReadOnly ||
				!reflect.DeepEqual(g.Initiators, []string{"iqn.1994-05.com.redhat:*", "iqn.2024-01.org.example:host?"}) {
				t.Errorf("group = %+v", g)
			}
			if len(tg.IncomingUsers) != 2 || tg.RelTgtID != 3 || len(tg.Params) != 14 {
				t.Errorf("target = %+v", tg)
			}
			dg := f.DeviceGroups[0]
			if dg.Name != "dg" || !reflect.DeepEqual(dg.Devices, []string{"blk0", "null0"}) ||
				dg.TargetGroups[0].GroupID != 256 || !dg.TargetGroups[0].Preferred ||
				dg.TargetGroups[1].State != StateNonOptimized || dg.TargetGroups[1].Targets[0].RelTgtID != 2 {
				t.Errorf("device group = %+v", dg)
			}
			if f.SetupID != "7" || f.Devices[0].Filename != "/srv/disk images/a b.img" || f.Devices[0].Size != 1<<30 {
				t.Errorf("file = %+v", f)
			}
			if f.Devices[2].Name != "f#1" || f.Devices[2].Filename != `C:\images\f1` {
				t.Errorf("device = %+v", f.Devices[2])
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.check(t, mustParse(t, tt.src))
		})
	}
}

func TestWarnings(t *testing.T) {
	f := mustParse(t, manPage)
	want := []string{
		"test.conf:25:3: unsupported attribute dummy in DEVICE dummy ignored",
		"test.conf:29:15: target driver scst_local skipped: hatarget serves iSCSI only",
		"test.conf:56:15: target driver qla2x00t skipped: hatarget serves iSCSI only",
	}
	var got []string
	for _, w := range f.Warnings {
		got = append(got, w.String())
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("warnings:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if d := f.Devices[3]; len(d.Extra) != 1 || d.Extra[0].Name != "dummy" || d.Extra[0].Value != "1" {
		t.Errorf("dummy device keeps %+v", d.Extra)
	}
}

const disks = "HANDLER vdisk_fileio {\n\tDEVICE d0 {\n\t\tfilename /d0\n\t}\n}\n" // lines 1-5

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name      string
		src       string
		line, col int
		msg       string
	}{
		{"unterminated quote", "TARGET_DRIVER iscsi {\n\tIncomingUser \"joe secret\n}\n",
			2, 15, "unterminated quoted string"},
		{"unterminated block", "HANDLER vdisk_fileio {\n\tDEVICE d {\n\t\tfilename /x\n\t}\n",
			1, 22, `unterminated HANDLER block: missing "}"`},
		{"unknown top-level keyword", "\n\n  HANDLR vdisk_fileio {\n}\n",
			3, 3, `unknown top-level keyword "HANDLR"`},
		{"stray closing brace", disks + "}\n",
			6, 1, `unexpected "}" with no open block`},
		{"brace without keyword", "{\n}\n",
			1, 1, `"{" must follow a keyword such as DEVICE or TARGET`},
		{"bad LUN number", disks + "TARGET_DRIVER iscsi {\n\tTARGET iqn.2024-01.x:t {\n\t\tLUN zero d0\n\t}\n}\n",
			8, 7, `bad number "zero" for LUN`},
		{"LUN too large", disks + "TARGET_DRIVER iscsi {\n\tTARGET iqn.2024-01.x:t {\n\t\tLUN 16384 d0\n\t}\n}\n",
			8, 7, "LUN 16384 out of range [0, 16383]"},
		{"duplicate device", disks + "HANDLER vdisk_blockio {\n\tDEVICE d0 {\n\t\tfilename /dev/x\n\t}\n}\n",
			7, 2, `duplicate device "d0" (first at line 2)`},
		{"LUN of unknown device", disks + "TARGET_DRIVER iscsi {\n\tTARGET iqn.2024-01.x:t {\n\t\tLUN 0 d1\n\t}\n}\n",
			8, 3, `LUN 0 refers to unknown device "d1"`},
		{"duplicate LUN in target", disks + "TARGET_DRIVER iscsi {\n\tTARGET iqn.2024-01.x:t {\n\t\tLUN 0 d0\n\t\tLUN 0 d0\n\t}\n}\n",
			9, 3, "duplicate LUN 0 in TARGET iqn.2024-01.x:t (first at line 8)"},
		{"duplicate LUN in group", disks + "TARGET_DRIVER iscsi {\n\tTARGET iqn.2024-01.x:t {\n\t\tLUN 0 d0\n\t\tGROUP g {\n\t\t\tLUN 3 d0\n\t\t\tLUN 3 d0\n\t\t}\n\t}\n}\n",
			11, 4, "duplicate LUN 3 in GROUP g (first at line 10)"},
		{"fileio without filename", "HANDLER vdisk_fileio {\n\tDEVICE d {\n\t\tnv_cache 1\n\t}\n}\n",
			2, 2, "device d (vdisk_fileio) has no filename"},
		{"blockio without filename", "HANDLER vdisk_blockio {\n\tDEVICE b\n}\n",
			2, 2, "device b (vdisk_blockio) has no filename"},
		{"blocksize 1024", "HANDLER vdisk_fileio {\n\tDEVICE d {\n\t\tfilename /d\n\t\tblocksize 1024\n\t}\n}\n",
			4, 13, "blocksize 1024 not supported: want 512 or 4096"},
		{"pass-through handler", "# local disks\nHANDLER dev_disk {\n\tDEVICE 1:0:0:0\n}\n",
			2, 9, "handler dev_disk passes SCSI commands through to a local device, which a userspace target cannot do"},
		{"pass-through tape", "HANDLER dev_tape {\n}\n",
			1, 9, "handler dev_tape passes SCSI commands through to a local device, which a userspace target cannot do"},
		{"unsupported handler", "HANDLER vcdrom {\n\tDEVICE cd { filename /cd.iso }\n}\n",
			1, 9, `handler "vcdrom" is not supported: want vdisk_fileio, vdisk_blockio or vdisk_nullio`},
		{"bad boolean", "HANDLER vdisk_fileio {\n\tDEVICE d {\n\t\tfilename /d\n\t\tnv_cache yes\n\t}\n}\n",
			4, 12, `bad boolean "yes" for nv_cache: want 0 or 1`},
		{"bad target enabled", disks + "TARGET_DRIVER iscsi {\n\tTARGET iqn.2024-01.x:t {\n\t\tenabled 2\n\t}\n}\n",
			8, 11, `bad boolean "2" for enabled: want 0 or 1`},
		{"duplicate filename", "HANDLER vdisk_fileio {\n\tDEVICE d {\n\t\tfilename /d\n\t\tfilename /e\n\t}\n}\n",
			4, 3, "duplicate filename (first at line 3)"},
		{"size and size_mb disagree", "HANDLER vdisk_nullio {\n\tDEVICE n {\n\t\tsize_mb 1\n\t\tsize 4096\n\t}\n}\n",
			4, 8, "size 4096 (4096 bytes) disagrees with size_mb 1 (1048576 bytes) at line 3"},
		{"size not a multiple of blocksize", "HANDLER vdisk_nullio {\n\tDEVICE n {\n\t\tsize 4096\n\t\tblocksize 4096\n\t}\n\tDEVICE m { size 1000 }\n}\n",
			6, 2, "size 1000 of device m is not a multiple of its blocksize 512"},
		{"bad ALUA state", disks + "DEVICE_GROUP dg {\n\tTARGET_GROUP tg {\n\t\tstate sleepy\n\t}\n}\n",
			8, 9, `bad ALUA state "sleepy": want active, nonoptimized, standby, unavailable, offline or transitioning`},
		{"unknown device in device group", disks + "DEVICE_GROUP dg {\n\tDEVICE nope\n}\n",
			6, 1, `DEVICE_GROUP dg refers to unknown device "nope"`},
		{"CHAP without secret", "TARGET_DRIVER iscsi {\n\tIncomingUser joe\n}\n",
			2, 15, `IncomingUser wants "user secret", got 1 words`},
		{"target name not iSCSI", "TARGET_DRIVER iscsi {\n\tTARGET 25:00:00:f0:98:87:92:f3\n}\n",
			2, 2, `target name "25:00:00:f0:98:87:92:f3" is not an iSCSI name: want iqn., eui. or naa. prefix`},
		{"INITIATOR outside GROUP", disks + "TARGET_DRIVER iscsi {\n\tTARGET iqn.2024-01.x:t {\n\t\tINITIATOR iqn.2024-01.x:host\n\t}\n}\n",
			8, 3, "INITIATOR is not allowed in TARGET iqn.2024-01.x:t"},
		{"unknown block", "HANDLER vdisk_fileio {\n\tDEVICE d {\n\t\tfilename /d\n\t\tFOO x {\n\t\t}\n\t}\n}\n",
			4, 9, "unexpected block after FOO in DEVICE d"},
		{"duplicate enabled rel_tgt_id", disks + "TARGET_DRIVER iscsi {\n\tTARGET iqn.2024-01.x:a {\n\t\tenabled 1\n\t\trel_tgt_id 5\n\t}\n\tTARGET iqn.2024-01.x:b {\n\t\tenabled 1\n\t\trel_tgt_id 5\n\t}\n}\n",
			11, 2, "rel_tgt_id 5 of target iqn.2024-01.x:b is already used by enabled target iqn.2024-01.x:a (first at line 7)"},
		{"bad digest", disks + "TARGET_DRIVER iscsi {\n\tTARGET iqn.2024-01.x:t {\n\t\tHeaderDigest MD5\n\t}\n}\n",
			8, 16, `bad HeaderDigest "MD5": want None, CRC32C or a comma-separated list of them`},
		{"bad setup_id", "setup_id twelve\n", 1, 10,
			`bad number "twelve" for setup_id: want a 32-bit number such as 0x1234`},
		{"attribute without value", "HANDLER vdisk_fileio {\n\tDEVICE d {\n\t\tfilename\n\t}\n}\n",
			3, 3, "filename needs a value"},
		{"two OutgoingUsers", "TARGET_DRIVER iscsi {\n\tOutgoingUser \"a 12charsecret\"\n\tOutgoingUser \"b 12charsecret\"\n}\n",
			3, 2, "more than one OutgoingUser: mutual CHAP has a single target identity"},
		{"nesting too deep", "a {b {c {d {e {f {g {h {i {\n", 1, 27, "blocks nested too deeply"},
		{"duplicate iscsi driver", "TARGET_DRIVER iscsi {\n}\nTARGET_DRIVER iscsi {\n}\n",
			3, 1, "duplicate TARGET_DRIVER iscsi (first at line 1)"},
		{"initiator in two groups", disks + "TARGET_DRIVER iscsi {\n\tTARGET iqn.2024-01.x:t {\n\t\tGROUP a {\n\t\t\tINITIATOR iqn.x\n\t\t}\n\t\tGROUP b {\n\t\t\tINITIATOR iqn.x\n\t\t}\n\t}\n}\n",
			11, 3, "INITIATOR iqn.x of GROUP b is already in GROUP a (first at line 8)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := Parse("bad.conf", []byte(tt.src))
			if err == nil {
				t.Fatalf("Parse succeeded: %+v", f)
			}
			if f != nil {
				t.Errorf("Parse returned a File along with error %v", err)
			}
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("error %v is %T, not *Error", err, err)
			}
			want := &Error{Pos: Pos{File: "bad.conf", Line: tt.line, Col: tt.col}, Msg: tt.msg}
			if pe.Error() != want.Error() {
				t.Errorf("error\n got %s\nwant %s", pe, want)
			}
		})
	}
}

// roundTripInputs are files whose Format output must parse back equal.
var roundTripInputs = map[string]string{
	"deployment guide": deploymentGuide,
	"man page":         manPage,
	"everything":       everything,
	"empty":            "",
	"comments only":    "# nothing\n\n   # here\n",
	"group and quoted users": disks + `TARGET_DRIVER iscsi {
	TARGET iqn.2024-01.x:t {
		IncomingUser "user  secret123"
		GROUP g {
			LUN 0 d0 { read_only 1 }
			INITIATOR *
		}
	}
}`,
	"odd characters in values": `HANDLER vdisk_fileio {
	DEVICE "d{1}" {
		filename "/tmp/q\"uote\\#"
		prod_id "a\tb"
		weird "back\\ slash\\"
		"odd name" "{}"
		empty ""
		bare
	}
}`,
}

func TestRoundTrip(t *testing.T) {
	for name, src := range roundTripInputs {
		t.Run(name, func(t *testing.T) {
			f1 := mustParse(t, src)
			out := Format(f1)
			f2, err := Parse("formatted", out)
			if err != nil {
				t.Fatalf("reparse: %v\n%s", err, out)
			}
			if !f1.Equal(f2) {
				t.Errorf("round trip changed the model\nfirst:  %+v\nsecond: %+v\ntext:\n%s", f1, f2, out)
			}
			if again := Format(f2); !bytes.Equal(out, again) {
				t.Errorf("Format is not a fixed point:\n%s\n---\n%s", out, again)
			}
		})
	}
}

func TestFormatCanonical(t *testing.T) {
	want := `HANDLER vdisk_fileio {
	DEVICE disk01 {
		filename /dev/sdb1
		nv_cache 1
	}

	DEVICE disk02 {
		filename /dev/sdc1
		nv_cache 1
	}
}

TARGET_DRIVER iscsi {
	enabled 1

	TARGET iqn.2006-10.net.vlnb:tgt {
		enabled 1

		LUN 0 disk01
		LUN 1 disk02
	}
}
`
	if got := string(Format(mustParse(t, deploymentGuide))); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

func TestHideSecrets(t *testing.T) {
	f := mustParse(t, everything)
	var b bytes.Buffer
	if err := Write(&b, f, FormatOptions{HideSecrets: true}); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, secret := range []string{"12charsecret", "secretsecret1", "mutualsecret"} {
		if strings.Contains(out, secret) {
			t.Errorf("output contains secret %q:\n%s", secret, out)
		}
	}
	if !strings.Contains(out, `IncomingUser "alice <hidden>"`) {
		t.Errorf("user names should stay visible:\n%s", out)
	}
	if !strings.Contains(string(Format(f)), "secretsecret1") {
		t.Error("Format must keep secrets")
	}
}

func TestValidateHandBuilt(t *testing.T) {
	good := func() *File {
		return &File{
			Devices: []Device{{Name: "d", Handler: HandlerFileIO, Filename: "/d", BlockSize: 4096, Rotational: true}},
			Targets: []Target{{
				Name: "iqn.2024-01.x:t", Enabled: true,
				LUNs:   []LUN{{Number: 0, Device: "d"}},
				Params: []Param{{Key: "MaxRecvDataSegmentLength", Value: "65536"}},
			}},
			DeviceGroups: []DeviceGroup{{Name: "dg", Devices: []string{"d"},
				TargetGroups: []TargetGroup{{Name: "tg", GroupID: 1, State: StateStandby,
					Targets: []TargetRef{{Name: "iqn.2024-01.x:t"}}}}}},
		}
	}
	f := good()
	if err := Validate(f); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	back, err := Parse("x", Format(f))
	if err != nil || !back.Equal(f) {
		t.Fatalf("hand-built file does not round trip: %v\n%s", err, Format(f))
	}

	broken := map[string]func(f *File){
		"zero blocksize":   func(f *File) { f.Devices[0].BlockSize = 0 },
		"unknown handler":  func(f *File) { f.Devices[0].Handler = "vcdrom" },
		"newline in value": func(f *File) { f.Devices[0].Filename = "/a\nb" },
		"extra named filename": func(f *File) {
			f.Devices[0].Extra = []Attr{{Name: "filename", Value: "/x"}}
		},
		"empty state":        func(f *File) { f.DeviceGroups[0].TargetGroups[0].State = "" },
		"space in CHAP user": func(f *File) { f.Targets[0].IncomingUsers = []CHAPUser{{User: "a b", Secret: "c"}} },
		"unknown param":      func(f *File) { f.Targets[0].Params[0].Key = "Bogus" },
		"LUN too large":      func(f *File) { f.Targets[0].LUNs[0].Number = MaxLUN + 1 },
		"space in device":    func(f *File) { f.Devices[0].Name = "a b" },
	}
	for name, breakIt := range broken {
		t.Run(name, func(t *testing.T) {
			f := good()
			breakIt(f)
			if err := Validate(f); err == nil {
				t.Errorf("Validate accepted it:\n%s", Format(f))
			}
		})
	}
}

func TestQuote(t *testing.T) {
	for _, s := range []string{"", "a", "a b", `a"b`, `a\b`, `a\`, `a\"`, `\\`, `a#b`, "{", "}", "\\{", "tab\there", "\v", "é ü"} {
		toks, err := lex("q", []byte(quote(s)))
		if err != nil {
			t.Errorf("quote(%q) = %s: %v", s, quote(s), err)
			continue
		}
		if len(toks) != 2 || toks[0].kind != tWord || toks[0].text != s {
			t.Errorf("quote(%q) = %s lexes to %+v", s, quote(s), toks)
		}
	}
}

func TestEqualIgnoresPositionsAndWarnings(t *testing.T) {
	a := mustParse(t, manPage)
	b := mustParse(t, "\n\n"+manPage)
	b.Warnings = nil
	if !a.Equal(b) {
		t.Error("files differing only in positions and warnings are not Equal")
	}
	b.Devices[0].NVCache = false
	if a.Equal(b) {
		t.Error("files with different devices are Equal")
	}
	if (*File)(nil).Equal(a) || !(*File)(nil).Equal(nil) {
		t.Error("nil handling")
	}
}

func TestParseFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "scst.conf")
	if err := os.WriteFile(path, []byte("HANDLER vdisk_nullio {\n\tDEVICE n {\n\t\tsize x\n\t}\n}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := ParseFile(path)
	if want := path + `:3:8: bad number "x" for size`; err == nil || err.Error() != want {
		t.Errorf("err = %v, want %s", err, want)
	}
	if _, err := ParseFile(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

func TestPosString(t *testing.T) {
	for _, tt := range []struct {
		p    Pos
		want string
	}{
		{Pos{"f", 1, 2}, "f:1:2"},
		{Pos{"", 1, 2}, "1:2"},
		{Pos{"f", 0, 0}, "f"},
		{Pos{}, "-"},
	} {
		if got := tt.p.String(); got != tt.want {
			t.Errorf("%#v.String() = %q, want %q", tt.p, got, tt.want)
		}
	}
}
