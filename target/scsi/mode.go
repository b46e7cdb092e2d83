package scsi

// Mode pages (SPC-4 7.5, SBC-3 6.4). The values live in LU atomics (wce,
// dsense, swp); everything else in the pages is fixed. A page is built from
// modeValues so that MODE SENSE, MODE SELECT's "did a fixed field change?"
// check and the changeable mask all come from one function per page.

const (
	pcCurrent    = 0
	pcChangeable = 1
	pcDefault    = 2
	pcSaved      = 3

	allPages    = 0x3f
	allSubpages = 0xff
)

// Device-specific parameter bits of the mode parameter header (SBC-3 6.4.1).
const (
	dspWP     = 0x80
	dspDPOFUA = 0x10
)

type modeValues struct {
	wce, dsense, swp bool
	// mask asks for the changeable-values mask instead of values.
	mask bool
}

type modePage struct {
	code   byte
	length int // whole page, header included
	fill   func(b []byte, v modeValues)
	apply  func(b []byte, v *modeValues)
}

// modePages in ascending page code order, as "all pages" returns them.
var modePages = []modePage{
	{code: 0x01, length: 12, fill: fillErrorRecovery},
	{code: 0x08, length: 20, fill: fillCaching, apply: func(b []byte, v *modeValues) { v.wce = b[2]&0x04 != 0 }},
	{code: 0x0a, length: 12, fill: fillControl, apply: func(b []byte, v *modeValues) {
		v.dsense = b[2]&0x04 != 0
		v.swp = b[4]&0x08 != 0
	}},
	{code: 0x1c, length: 12, fill: fillInformationalExceptions},
}

// fillErrorRecovery: read-write error recovery, all zero. Virtual storage
// has no retries or reallocation to tune.
func fillErrorRecovery(b []byte, v modeValues) {}

// fillCaching: WCE is the only changeable bit; with it clear, writes are
// durable at completion.
func fillCaching(b []byte, v modeValues) {
	if v.mask || v.wce {
		b[2] |= 0x04
	}
}

// fillControl: D_SENSE selects descriptor sense data, SWP write-protects the
// LU. QAM 1 because commands do run concurrently; QERR 0 and TST 0 (one task
// set for all I_T nexuses); no busy timeout limit.
func fillControl(b []byte, v modeValues) {
	if v.mask {
		b[2], b[4] = 0x04, 0x08
		return
	}
	if v.dsense {
		b[2] |= 0x04
	}
	b[3] = 0x10
	if v.swp {
		b[4] |= 0x08
	}
	putU16(b[8:], 0xffff)
}

// fillInformationalExceptions: DEXCPT set, since nothing reports failure
// prediction.
func fillInformationalExceptions(b []byte, v modeValues) {
	if !v.mask {
		b[2] = 0x08
	}
}

func (p *modePage) build(v modeValues) []byte {
	b := make([]byte, p.length)
	b[0] = p.code
	b[1] = byte(p.length - 2)
	p.fill(b, v)
	return b
}

func findModePage(code byte) *modePage {
	for i := range modePages {
		if modePages[i].code == code {
			return &modePages[i]
		}
	}
	return nil
}

func (lu *LU) currentModes() modeValues {
	return modeValues{wce: lu.wce.Load(), dsense: lu.dsense.Load(), swp: lu.swp.Load()}
}

func (lu *LU) modesFor(pc byte, st *luState) modeValues {
	switch pc {
	case pcChangeable:
		return modeValues{mask: true}
	case pcDefault:
		return modeValues{wce: st.cfg.WriteCache}
	}
	return lu.currentModes()
}

func modeSense(r request) error {
	six := r.cdb[0] == opModeSense6
	dbd := r.cdb[1]&0x08 != 0
	longLBA := !six && r.cdb[1]&0x10 != 0
	pc, code, sub := r.cdb[2]>>6, r.cdb[2]&0x3f, r.cdb[3]
	alloc := int(r.cdb[4])
	if !six {
		alloc = int(getU16(r.cdb[7:]))
	}
	if pc == pcSaved {
		return errSavingParams
	}
	// Subpage FFh asks for the page and all its subpages; none of our pages
	// has subpages.
	if sub != 0 && sub != allSubpages {
		return invalidCDB(3, -1)
	}
	var pages []*modePage
	if code == allPages {
		for i := range modePages {
			pages = append(pages, &modePages[i])
		}
	} else if p := findModePage(code); p != nil {
		pages = append(pages, p)
	} else {
		return invalidCDB(2, 5)
	}

	v := r.lu.modesFor(pc, r.st)
	hdr := 4
	if !six {
		hdr = 8
	}
	data := make([]byte, hdr, 256)
	dsp := byte(dspDPOFUA)
	if r.st.readOnly || r.lu.swp.Load() {
		dsp |= dspWP
	}
	if !dbd {
		data = append(data, blockDescriptor(r.st, longLBA, pc == pcChangeable)...)
	}
	for _, p := range pages {
		data = append(data, p.build(v)...)
	}
	bdl := len(data) - hdr
	for _, p := range pages {
		bdl -= p.length
	}
	if six {
		data[0] = byte(len(data) - 1)
		data[2] = dsp
		data[3] = byte(bdl)
	} else {
		putU16(data[0:], uint16(len(data)-2))
		data[3] = dsp
		if longLBA && !dbd {
			data[4] = 0x01
		}
		putU16(data[6:], uint16(bdl))
	}
	respond(r.cmd, r.res, data, alloc)
	return nil
}

// blockDescriptor is the short (8-byte) or long (16-byte) LBA block
// descriptor. Nothing in it is changeable.
func blockDescriptor(st *luState, long, mask bool) []byte {
	if long {
		b := make([]byte, 16)
		if !mask {
			putU64(b[0:], st.blocks)
			putU32(b[12:], st.blockSize)
		}
		return b
	}
	b := make([]byte, 8)
	if !mask {
		putU32(b[0:], uint32(min(st.blocks, 0xffffffff)))
		putU32(b[4:], st.blockSize) // byte 4 is reserved, and the length < 2^24
	}
	return b
}

func modeSelect(r request) error {
	six := r.cdb[0] == opModeSelect6
	if r.cdb[1]&0x01 != 0 {
		return invalidCDB(1, 0) // SP: there are no saved pages
	}
	// PF=0 would mean vendor-specific page formats; ours are the standard
	// ones either way, so the bit is accepted in both states.
	plen := int(r.cdb[4])
	if !six {
		plen = int(getU16(r.cdb[7:]))
	}
	r.res.Transfer = plen
	data := r.cmd.DataOut[:min(plen, len(r.cmd.DataOut))]
	if plen == 0 {
		return nil
	}

	lu := r.lu
	lu.modeMu.Lock()
	old := lu.currentModes()
	next, err := parseModeSelect(data, six, r.st, old)
	if err == nil {
		lu.wce.Store(next.wce)
		lu.dsense.Store(next.dsense)
		lu.swp.Store(next.swp)
	}
	lu.modeMu.Unlock()
	if err != nil {
		return err
	}
	if next != old {
		// SPC-4 7.5.1: the other I_T nexuses learn that shared mode pages
		// changed under them.
		lu.raiseAll(ascModeParametersChanged, r.ns)
	}
	return nil
}

// parseModeSelect validates a whole MODE SELECT parameter list against the
// current values and returns the values it sets. Nothing is applied unless
// every page is valid.
func parseModeSelect(data []byte, six bool, st *luState, cur modeValues) (modeValues, error) {
	hdr, bdlField := 4, 3
	if !six {
		hdr, bdlField = 8, 6
	}
	if len(data) < hdr {
		return cur, errParamListLength
	}
	mediumField := 1
	if !six {
		mediumField = 2
	}
	if data[mediumField] != 0 {
		return cur, invalidParam(mediumField, -1)
	}
	bdl := int(data[3])
	long := false
	if !six {
		bdl = int(getU16(data[6:]))
		long = data[4]&0x01 != 0
	}
	pos := hdr
	if bdl != 0 {
		if (long && bdl != 16) || (!long && bdl != 8) {
			return cur, invalidParam(bdlField, -1)
		}
		if len(data) < pos+bdl {
			return cur, errParamListLength
		}
		if err := checkBlockDescriptor(data[pos:pos+bdl], pos, st); err != nil {
			return cur, err
		}
		pos += bdl
	}
	next := cur
	for pos < len(data) {
		if len(data)-pos < 2 {
			return cur, errParamListLength
		}
		if data[pos]&0x40 != 0 {
			return cur, invalidParam(pos, 6) // SPF: no subpages here
		}
		p := findModePage(data[pos] & 0x3f)
		if p == nil {
			return cur, invalidParam(pos, 5)
		}
		if int(data[pos+1]) != p.length-2 {
			return cur, invalidParam(pos+1, -1)
		}
		if len(data)-pos < p.length {
			return cur, errParamListLength
		}
		page := data[pos : pos+p.length]
		now, mask := p.build(cur), p.build(modeValues{mask: true})
		for i := 2; i < p.length; i++ {
			if bad := (page[i] ^ now[i]) &^ mask[i]; bad != 0 {
				return cur, invalidParam(pos+i, highBit(bad))
			}
		}
		if p.apply != nil {
			p.apply(page, &next)
		}
		pos += p.length
	}
	return next, nil
}

// checkBlockDescriptor accepts a block descriptor that restates the current
// geometry (or leaves it zero): capacity and block size are not changeable.
func checkBlockDescriptor(b []byte, pos int, st *luState) error {
	var blocks uint64
	var size uint32
	var sizeField int
	if len(b) == 16 {
		blocks, size, sizeField = getU64(b), getU32(b[12:]), 12
	} else {
		blocks, size, sizeField = uint64(getU32(b)), getU24(b[5:]), 5
		if blocks == 0xffffffff && st.blocks >= 0xffffffff {
			blocks = st.blocks
		}
	}
	if blocks != 0 && blocks != st.blocks {
		return invalidParam(pos, -1)
	}
	if size != 0 && size != st.blockSize {
		return invalidParam(pos+sizeField, -1)
	}
	return nil
}
