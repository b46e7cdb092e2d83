package scstconf

import (
	"fmt"
	"reflect"
)

// Supported device handlers.
const (
	HandlerFileIO  = "vdisk_fileio"
	HandlerBlockIO = "vdisk_blockio"
	HandlerNullIO  = "vdisk_nullio"
)

// ALUA target port group states, as SCST spells them.
const (
	StateActive        = "active"
	StateNonOptimized  = "nonoptimized"
	StateStandby       = "standby"
	StateUnavailable   = "unavailable"
	StateOffline       = "offline"
	StateTransitioning = "transitioning"
)

const (
	// DefaultBlockSize is SCST's logical block size when none is given.
	DefaultBlockSize = 512

	// DefaultNullIOSize is SCST's VDISK_NULLIO_SIZE: a vdisk_nullio device
	// without size or size_mb has this many bytes.
	DefaultNullIOSize int64 = 5 << 40 / 2

	// MaxLUN is SCST_MAX_LUN: two of the 16 bits of a single-level LUN
	// select the addressing method.
	MaxLUN = 1<<14 - 1
)

// Pos is a place in a configuration file. Line and Col count from 1; Col
// counts bytes. The zero Pos means "not from a file".
type Pos struct {
	File      string
	Line, Col int
}

// IsValid reports whether p names a place in a file.
func (p Pos) IsValid() bool { return p.Line > 0 }

// String returns "file:line:col", leaving out the parts that are unknown.
func (p Pos) String() string {
	switch {
	case !p.IsValid() && p.File == "":
		return "-"
	case !p.IsValid():
		return p.File
	case p.File == "":
		return fmt.Sprintf("%d:%d", p.Line, p.Col)
	}
	return fmt.Sprintf("%s:%d:%d", p.File, p.Line, p.Col)
}

// Error is a parse or validation error at a place in the file.
type Error struct {
	Pos Pos
	Msg string
}

func (e *Error) Error() string { return e.Pos.String() + ": " + e.Msg }

// Warning is something Parse accepted but the caller should hear about:
// an attribute hatarget does not use, a skipped target driver, ...
type Warning struct {
	Pos Pos
	Msg string
}

func (w Warning) String() string { return w.Pos.String() + ": " + w.Msg }

// Attr is an attribute the package does not interpret, kept so that an
// export can write it back.
type Attr struct {
	Name, Value string
	Pos         Pos
}

// File is a whole scst.conf.
type File struct {
	// Comment is written by Format as "#" lines at the top of the file: a
	// note for the reader, such as what an export left out. Parse drops
	// comments, so it never sets Comment, and Equal ignores it.
	Comment string

	SetupID      string // as written, e.g. "0x1234"; empty if absent
	Devices      []Device
	ISCSIDriver  ISCSIDriver
	Targets      []Target // the TARGETs of TARGET_DRIVER iscsi
	DeviceGroups []DeviceGroup
	Warnings     []Warning // ignored by Equal and not written by Format
}

// Device is a DEVICE in a HANDLER block. Booleans hold their effective
// value, with SCST's defaults applied when the file is silent.
type Device struct {
	Name     string
	Handler  string // HandlerFileIO, HandlerBlockIO or HandlerNullIO
	Filename string // empty for vdisk_nullio

	NVCache         bool
	WriteThrough    bool
	ODirect         bool
	ReadOnly        bool
	ThinProvisioned bool
	Removable       bool
	Rotational      bool // true unless "rotational 0"
	AllowSanitize   bool // hatarget extension: SANITIZE may erase this device

	BlockSize uint32 // 512 or 4096
	Size      int64  // bytes; 0 means the backing file's size (not for nullio)

	T10DevID  string
	T10VendID string
	ProdID    string
	USN       string
	NAAID     string

	Extra []Attr
	Pos   Pos
}

// CHAPUser is an IncomingUser or OutgoingUser line.
type CHAPUser struct {
	User, Secret string
	Pos          Pos
}

// ISCSIDriver holds the attributes of the TARGET_DRIVER iscsi block itself.
// Its users authenticate discovery sessions.
type ISCSIDriver struct {
	Enabled       bool
	IncomingUsers []CHAPUser
	OutgoingUsers []CHAPUser // at most one: mutual CHAP has one target identity
	Extra         []Attr
	Pos           Pos // zero if the file has no TARGET_DRIVER iscsi block
}

// Param is an iSCSI target parameter such as HeaderDigest or QueuedCommands.
type Param struct {
	Key, Value string
	Pos        Pos
}

// LUN maps a LUN number to a device, in a TARGET or in a GROUP.
type LUN struct {
	Number   uint64
	Device   string
	ReadOnly bool
	Extra    []Attr
	Pos      Pos
}

// Group is a GROUP in a TARGET: the initiators matching Initiators see LUNs
// instead of the target's default LUNs.
type Group struct {
	Name       string
	LUNs       []LUN
	Initiators []string // names or patterns using SCST's *, ? and ! wildcards
	Extra      []Attr
	Pos        Pos
}

// Target is a TARGET in TARGET_DRIVER iscsi.
type Target struct {
	Name          string // the iSCSI name, e.g. iqn.2006-10.net.vlnb:tgt
	Enabled       bool
	RelTgtID      uint16 // 0: not set
	IncomingUsers []CHAPUser
	OutgoingUsers []CHAPUser // at most one
	Params        []Param
	LUNs          []LUN
	Groups        []Group
	Extra         []Attr
	Pos           Pos
}

// DeviceGroup is SCST's ALUA device group: devices that share target port
// group states.
type DeviceGroup struct {
	Name         string
	Devices      []string
	TargetGroups []TargetGroup
	Extra        []Attr
	Pos          Pos
}

// TargetGroup is an ALUA target port group within a DeviceGroup.
type TargetGroup struct {
	Name      string
	GroupID   uint16
	State     string // one of the State* constants
	Preferred bool
	Targets   []TargetRef
	Extra     []Attr
	Pos       Pos
}

// TargetRef names a target in a TargetGroup. The target may live on another
// node, so it need not be one of File.Targets; RelTgtID identifies it then.
type TargetRef struct {
	Name     string
	RelTgtID uint16
	Extra    []Attr
	Pos      Pos
}

// Equal reports whether f and g describe the same configuration. Positions,
// warnings and comments are ignored, and a nil list equals an empty one, so
// that a file and its Format output compare equal.
func (f *File) Equal(g *File) bool {
	if f == nil || g == nil {
		return f == g
	}
	a, b := *f, *g
	a.Comment, b.Comment = "", ""
	return equalValue(reflect.ValueOf(a), reflect.ValueOf(b))
}

var (
	posType      = reflect.TypeFor[Pos]()
	warningsType = reflect.TypeFor[[]Warning]()
)

// equalValue walks the model reflectively so that fields added later are
// compared without anyone remembering to extend Equal.
func equalValue(a, b reflect.Value) bool {
	switch a.Kind() {
	case reflect.Struct:
		if a.Type() == posType {
			return true
		}
		for i := range a.NumField() {
			if a.Field(i).Type() == warningsType {
				continue
			}
			if !equalValue(a.Field(i), b.Field(i)) {
				return false
			}
		}
		return true
	case reflect.Slice:
		if a.Len() != b.Len() {
			return false
		}
		for i := range a.Len() {
			if !equalValue(a.Index(i), b.Index(i)) {
				return false
			}
		}
		return true
	default:
		return a.Interface() == b.Interface()
	}
}
