package scstconf

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/hatarget/hatarget/fsm"
)

// richConfig uses every construct the conversion maps, in file order that
// differs from the sorted order of the Import.
const richConfig = `setup_id 0x1
HANDLER vdisk_fileio {
	DEVICE disk01 {
		filename /srv/disk01.img
		nv_cache 1
		usn DISK01
		naa_id 6001405aaaaaaaaaaaaaaaaaaaaaaaaa
	}
	DEVICE direct {
		filename /srv/direct.img
		o_direct 1
		write_through 1
		size_mb 16
	}
}
HANDLER vdisk_blockio {
	DEVICE blk0 {
		filename /dev/sdb
		blocksize 4096
		read_only 1
		thin_provisioned 1
		rotational 0
		removable 1
		allow_sanitize 1
		t10_dev_id blk0-id
		t10_vend_id HATARGET
		prod_id "Virtual Disk"
	}
}
HANDLER vdisk_nullio {
	DEVICE null0 { size 1048576 }
	DEVICE null1
}
TARGET_DRIVER iscsi {
	enabled 1
	IncomingUser "disco discosecret1"
	TARGET iqn.2024-01.org.example:off {
		enabled 0
		LUN 0 direct
	}
	TARGET iqn.2024-01.org.example:a {
		enabled 1
		IncomingUser1 "alice alicesecret1"
		IncomingUser2 "bob bobsecret22"
		OutgoingUser "tgt mutualsecret3"
		allowed_portal 10.0.0.*
		MaxRecvDataSegmentLength 262144
		allowed_initiator iqn.1994-05.com.redhat:*
		allowed_portal !10.0.0.9
		HeaderDigest CRC32C
		allowed_initiator iqn.2024-01.org.example:host?
		LUN 1 null0
		LUN 0 blk0 { read_only 1 }
		GROUP backup {
			LUN 1 null1
			LUN 0 disk01 { read_only 1 }
			INITIATOR iqn.1994-05.com.redhat:backup*
			INITIATOR iqn.2024-01.org.example:host?
		}
		GROUP empty
	}
}
`

// richSecrets are the CHAP secrets of richConfig.
var richSecrets = []string{"discosecret1", "alicesecret1", "bobsecret22", "mutualsecret3"}

func TestToImport(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want *fsm.Import
	}{
		{"deployment guide", deploymentGuide, &fsm.Import{
			Devices: []fsm.Device{
				{Name: "disk01", Handler: fsm.HandlerFileIO, Path: "/dev/sdb1", BlockSize: 512, NVCache: true, Rotational: true},
				{Name: "disk02", Handler: fsm.HandlerFileIO, Path: "/dev/sdc1", BlockSize: 512, NVCache: true, Rotational: true},
			},
			Targets: []fsm.Target{{
				IQN: "iqn.2006-10.net.vlnb:tgt", Enabled: true,
				LUNs: []fsm.LUN{{Number: 0, Device: "disk01"}, {Number: 1, Device: "disk02"}},
			}},
		}},
		{"rich", richConfig, &fsm.Import{
			Devices: []fsm.Device{
				{Name: "blk0", Handler: fsm.HandlerBlockIO, Path: "/dev/sdb", BlockSize: 4096, ReadOnly: true,
					Thin: true, Removable: true, AllowSanitize: true,
					T10DeviceID: "blk0-id", VendorID: "HATARGET", ProductID: "Virtual Disk"},
				{Name: "direct", Handler: fsm.HandlerBlockIO, Path: "/srv/direct.img", Size: 16 << 20, BlockSize: 512,
					WriteThrough: true, Rotational: true},
				{Name: "disk01", Handler: fsm.HandlerFileIO, Path: "/srv/disk01.img", BlockSize: 512, NVCache: true,
					Rotational: true, Serial: "DISK01", NAA: "6001405aaaaaaaaaaaaaaaaaaaaaaaaa"},
				{Name: "null0", Handler: fsm.HandlerNullIO, Size: 1 << 20, BlockSize: 512, Rotational: true},
				{Name: "null1", Handler: fsm.HandlerNullIO, Size: DefaultNullIOSize, BlockSize: 512, Rotational: true},
			},
			Targets: []fsm.Target{
				{
					IQN: "iqn.2024-01.org.example:a", Enabled: true,
					LUNs: []fsm.LUN{{Number: 0, Device: "blk0", ReadOnly: true}, {Number: 1, Device: "null0"}},
					Groups: []fsm.InitiatorGroup{
						{Name: "backup",
							Initiators: []string{"iqn.1994-05.com.redhat:backup*", "iqn.2024-01.org.example:host?"},
							LUNs:       []fsm.LUN{{Number: 0, Device: "disk01", ReadOnly: true}, {Number: 1, Device: "null1"}}},
						{Name: "empty"},
					},
					AllowedInitiators: []string{"iqn.1994-05.com.redhat:*", "iqn.2024-01.org.example:host?"},
					IncomingUsers:     []fsm.CHAPUser{{User: "alice", Secret: "alicesecret1"}, {User: "bob", Secret: "bobsecret22"}},
					OutgoingUser:      &fsm.CHAPUser{User: "tgt", Secret: "mutualsecret3"},
					Params: []fsm.Param{
						{Key: "HeaderDigest", Value: "CRC32C"},
						{Key: "MaxRecvDataSegmentLength", Value: "262144"},
						{Key: "allowed_portal", Value: "10.0.0.*"},
						{Key: "allowed_portal", Value: "!10.0.0.9"},
					},
				},
				{
					IQN:  "iqn.2024-01.org.example:off",
					LUNs: []fsm.LUN{{Number: 0, Device: "direct"}},
				},
			},
			DiscoveryUsers: []fsm.CHAPUser{{User: "disco", Secret: "discosecret1"}},
		}},
		{"empty", "", &fsm.Import{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _, err := ToImport(mustParse(t, tt.src))
			if err != nil {
				t.Fatalf("ToImport: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestToImportWarnings(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []string // in order, after the parser's own
	}{
		{"none", deploymentGuide, nil},
		{"disabled driver", disks + `TARGET_DRIVER iscsi {
	enabled 0
	TARGET iqn.2024-01.x:t { enabled 1 }
}`, []string{"test.conf:6:1: TARGET_DRIVER iscsi is disabled (enabled 0): its targets are imported disabled"}},
		{"disabled target and rel_tgt_id", disks + `TARGET_DRIVER iscsi {
	enabled 1
	TARGET iqn.2024-01.x:t {
		rel_tgt_id 5
	}
}`, []string{
			"test.conf:8:2: target iqn.2024-01.x:t is disabled (enabled 0): imported disabled",
			"test.conf:8:2: rel_tgt_id 5 of target iqn.2024-01.x:t ignored: the cluster allocates relative port ids itself",
		}},
		{"discovery mutual CHAP", disks + `TARGET_DRIVER iscsi {
	enabled 1
	OutgoingUser "me 12charsecret"
}`, []string{"test.conf:8:2: OutgoingUser me of TARGET_DRIVER iscsi ignored: the cluster has no mutual CHAP for discovery sessions"}},
		{"ALUA", disks + `DEVICE_GROUP dg {
	DEVICE d0
	TARGET_GROUP local { group_id 1 }
}`, []string{"test.conf:6:1: ALUA DEVICE_GROUP dg: port groups are assigned per cluster node; ignored"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := mustParse(t, tt.src)
			_, ws, err := ToImport(f)
			if err != nil {
				t.Fatalf("ToImport: %v", err)
			}
			if !slices.Equal(ws[:len(f.Warnings)], f.Warnings) {
				t.Errorf("warnings do not start with the parser's: %v", ws)
			}
			var got []string
			for _, w := range ws[len(f.Warnings):] {
				got = append(got, w.String())
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestToImportKeepsParserWarnings(t *testing.T) {
	f := mustParse(t, "HANDLER vdisk_nullio {\n\tDEVICE n { cluster_mode 1 }\n}\n")
	_, ws, err := ToImport(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Warnings) != 1 || !slices.Equal(ws, f.Warnings) {
		t.Errorf("got %v, want the parser's %v", ws, f.Warnings)
	}
}

func TestToImportErrors(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want string
	}{
		{"device name SCST allows", "HANDLER vdisk_nullio {\n\tDEVICE disk:1\n}",
			`test.conf:2:2: device name "disk:1" is not valid in the cluster`},
		{"device name too long", "HANDLER vdisk_nullio { DEVICE " + strings.Repeat("d", 65) + " }",
			"test.conf:1:24: device name"},
		{"upper-case IQN", disks + "TARGET_DRIVER iscsi {\n\tTARGET iqn.2024-01.X:t\n}",
			`test.conf:7:2: iSCSI name "iqn.2024-01.X:t": only lower-case letters`},
		{"group name", disks + "TARGET_DRIVER iscsi {\n\tTARGET iqn.2024-01.x:t {\n\t\tGROUP g:1\n\t}\n}",
			`test.conf:8:3: initiator group name "g:1" is not valid in the cluster`},
		{"quote in initiator", disks + "TARGET_DRIVER iscsi {\n\tTARGET iqn.2024-01.x:t {\n\t\tGROUP g { INITIATOR it's }\n\t}\n}",
			`test.conf:8:3: initiator name or pattern "it's" is not valid in the cluster`},
		{"two words in allowed_initiator", disks + "TARGET_DRIVER iscsi {\n\tTARGET iqn.2024-01.x:t {\n\t\tallowed_initiator a b\n\t}\n}",
			`test.conf:8:3: initiator name or pattern "a b" is not valid in the cluster`},
		{"NUL in CHAP secret", disks + "TARGET_DRIVER iscsi {\n\tIncomingUser joe 12char\x00secret\n}",
			"test.conf:7:2: CHAP user or secret contains a NUL byte"},
		{"NUL in parameter", disks + "TARGET_DRIVER iscsi {\n\tTARGET iqn.2024-01.x:t {\n\t\tallowed_portal \x00\n\t}\n}",
			"test.conf:8:3: allowed_portal contains a NUL byte"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			imp, ws, err := ToImport(mustParse(t, tt.src))
			var pe *Error
			if !errors.As(err, &pe) || !strings.HasPrefix(err.Error(), tt.want) {
				t.Fatalf("err = %v (%T), want *Error starting %q", err, err, tt.want)
			}
			if imp != nil || ws != nil {
				t.Error("ToImport returned a result along with an error")
			}
		})
	}
}

// TestToImportValidates checks that a File built in code gets the parser's
// positioned errors rather than a refusal from the cluster without a line.
func TestToImportValidates(t *testing.T) {
	at := Pos{File: "built", Line: 7, Col: 3}
	f := &File{Targets: []Target{{Name: "iqn.2024-01.x:t", LUNs: []LUN{{Number: 0, Device: "nope", Pos: at}}}}}
	_, _, err := ToImport(f)
	if want := `built:7:3: LUN 0 refers to unknown device "nope"`; err == nil || err.Error() != want {
		t.Errorf("err = %v, want %s", err, want)
	}
}

// fillIdentities does what the cluster leader does before it proposes an
// import: devices without usn or naa_id get generated ones. They are
// derived from the name so that every conversion of a file agrees, and the
// serial fits SCST's 20-byte usn so that it can be exported.
func fillIdentities(imp *fsm.Import) {
	for i := range imp.Devices {
		d := &imp.Devices[i]
		sum := sha256.Sum256([]byte(d.Name))
		h := hex.EncodeToString(sum[:])
		if d.Serial == "" {
			d.Serial = "SERIAL-" + h[:12]
		}
		if d.NAA == "" {
			d.NAA = "6" + h[:31]
		}
	}
}

// applyImport converts a parsed file and applies it to an empty cluster.
func applyImport(t testing.TB, f *File) (*fsm.Import, *fsm.State) {
	t.Helper()
	imp, _, err := ToImport(f)
	if err != nil {
		t.Fatalf("ToImport: %v", err)
	}
	fillIdentities(imp)
	s, _, err := fsm.Empty().ApplyCommand(1, imp, fsm.Env{})
	if err != nil {
		t.Fatalf("ToImport accepted what the cluster refuses: %v", err)
	}
	return imp, s
}

func TestImportRoundTrip(t *testing.T) {
	for name, src := range map[string]string{"deployment guide": deploymentGuide, "rich": richConfig, "empty": ""} {
		t.Run(name, func(t *testing.T) {
			imp1, s1 := applyImport(t, mustParse(t, src))
			exported := FromState(s1, true)
			if err := Validate(exported); err != nil {
				t.Fatalf("FromState returned an invalid File: %v", err)
			}
			text := Format(exported)
			imp2, s2 := applyImport(t, mustParse(t, string(text)))
			if !reflect.DeepEqual(imp1, imp2) {
				t.Errorf("round trip changed the import\nfirst:  %+v\nsecond: %+v\nexported:\n%s", imp1, imp2, text)
			}
			if again := Format(FromState(s2, true)); string(again) != string(text) {
				t.Errorf("export is not a fixed point:\n%s\n---\n%s", text, again)
			}
		})
	}
}

func TestFromStateLayout(t *testing.T) {
	_, s := applyImport(t, mustParse(t, richConfig))
	out := string(Format(FromState(s, true)))
	for _, want := range []string{
		// Devices grouped by handler, sorted by name within each group.
		"HANDLER vdisk_blockio {\n\tDEVICE blk0 {",
		"\tDEVICE direct {",
		"HANDLER vdisk_fileio {\n\tDEVICE disk01 {",
		"HANDLER vdisk_nullio {\n\tDEVICE null0 {\n\t\tsize 1048576\n\t\tusn ",
		// Identities survive.
		"\t\tusn DISK01\n\t\tnaa_id 6001405aaaaaaaaaaaaaaaaaaaaaaaaa\n",
		// Targets sorted by IQN, LUNs by number.
		"TARGET iqn.2024-01.org.example:a {\n\t\tenabled 1\n\t\tIncomingUser \"alice alicesecret1\"\n",
		"\t\tOutgoingUser \"tgt mutualsecret3\"\n\t\tallowed_initiator iqn.1994-05.com.redhat:*\n",
		"\t\tLUN 0 blk0 {\n\t\t\tread_only 1\n\t\t}\n\t\tLUN 1 null0\n",
		"TARGET iqn.2024-01.org.example:off {\n\t\tenabled 0\n",
		"TARGET_DRIVER iscsi {\n\tenabled 1\n\tIncomingUser \"disco discosecret1\"\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("export lacks %q:\n%s", want, out)
		}
	}
	if strings.Index(out, "org.example:a {") > strings.Index(out, "org.example:off {") {
		t.Errorf("targets not sorted:\n%s", out)
	}
}

func TestFromStateWithoutSecrets(t *testing.T) {
	_, s := applyImport(t, mustParse(t, richConfig))
	out := string(Format(FromState(s, false)))
	for _, secret := range richSecrets {
		if strings.Contains(out, secret) {
			t.Errorf("output contains secret %q:\n%s", secret, out)
		}
	}
	wantComment := `# CHAP users are left out because secrets were not requested
# (export with --show-secrets for a complete file); importing this
# file would not ask initiators for them:
#   TARGET_DRIVER iscsi: IncomingUser disco
#   TARGET iqn.2024-01.org.example:a: IncomingUser alice, IncomingUser bob, OutgoingUser tgt
`
	if !strings.HasPrefix(out, wantComment) {
		t.Errorf("output does not start with the note on CHAP users:\n%s", out)
	}
	f := mustParse(t, out)
	imp, _, err := ToImport(f)
	if err != nil {
		t.Fatalf("export without secrets does not import: %v", err)
	}
	if imp.DiscoveryUsers != nil || imp.Targets[0].IncomingUsers != nil || imp.Targets[0].OutgoingUser != nil {
		t.Errorf("CHAP users came back: %+v", imp)
	}

	_, plain := applyImport(t, mustParse(t, deploymentGuide))
	if c := FromState(plain, false).Comment; c != "" {
		t.Errorf("comment without any CHAP user: %q", c)
	}
}

func TestComment(t *testing.T) {
	f := mustParse(t, deploymentGuide)
	f.Comment = "first\n\nTARGET iqn.2024-01.x:injected {"
	out := string(Format(f))
	if want := "# first\n#\n# TARGET iqn.2024-01.x:injected {\n\nHANDLER"; !strings.HasPrefix(out, want) {
		t.Errorf("comment not written as # lines:\n%s", out)
	}
	back := mustParse(t, out)
	if !back.Equal(f) || back.Comment != "" {
		t.Errorf("comment changed the configuration:\n%s", out)
	}
}
