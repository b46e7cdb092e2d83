package scstconf

// Device attributes are described by tables so that parsing, default
// filling, validation and formatting cannot disagree about which
// attributes exist, their defaults, or their order in the output.

type boolAttr struct {
	name  string
	field func(*Device) *bool
	def   bool // SCST's default
}

var deviceBools = []boolAttr{
	{"nv_cache", func(d *Device) *bool { return &d.NVCache }, false},
	{"write_through", func(d *Device) *bool { return &d.WriteThrough }, false},
	{"o_direct", func(d *Device) *bool { return &d.ODirect }, false},
	{"read_only", func(d *Device) *bool { return &d.ReadOnly }, false},
	{"removable", func(d *Device) *bool { return &d.Removable }, false},
	{"rotational", func(d *Device) *bool { return &d.Rotational }, true},
	{"thin_provisioned", func(d *Device) *bool { return &d.ThinProvisioned }, false},
	// allow_sanitize is hatarget's own: SANITIZE erases the whole device,
	// so an initiator may only issue it where the administrator opted in.
	{"allow_sanitize", func(d *Device) *bool { return &d.AllowSanitize }, false},
}

type stringAttr struct {
	name  string
	field func(*Device) *string
	check func(name, v string) error
}

// deviceStrings starts with filename so Format writes it first, as
// scstadmin does.
var deviceStrings = []stringAttr{
	{"filename", func(d *Device) *string { return &d.Filename }, checkText},
	{"t10_dev_id", func(d *Device) *string { return &d.T10DevID }, checkIdent},
	{"t10_vend_id", func(d *Device) *string { return &d.T10VendID }, checkIdent},
	{"prod_id", func(d *Device) *string { return &d.ProdID }, checkIdent},
	{"usn", func(d *Device) *string { return &d.USN }, checkIdent},
	{"naa_id", func(d *Device) *string { return &d.NAAID }, checkIdent},
}

func deviceBool(name string) *boolAttr {
	for i := range deviceBools {
		if deviceBools[i].name == name {
			return &deviceBools[i]
		}
	}
	return nil
}

func deviceString(name string) *stringAttr {
	for i := range deviceStrings {
		if deviceStrings[i].name == name {
			return &deviceStrings[i]
		}
	}
	return nil
}

func isDeviceKey(name string) bool {
	switch name {
	case "blocksize", "size", "size_mb":
		return true
	}
	return deviceBool(name) != nil || deviceString(name) != nil
}

// defaultSize is the Size a device has when the file does not give one.
func defaultSize(handler string) int64 {
	if handler == HandlerNullIO {
		return DefaultNullIOSize
	}
	return 0
}
