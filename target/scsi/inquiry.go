package scsi

// VPD page codes.
const (
	vpdSupportedPages   = 0x00
	vpdUnitSerial       = 0x80
	vpdDeviceID         = 0x83
	vpdThirdPartyCopy   = 0x8f
	vpdBlockLimits      = 0xb0
	vpdBlockDevCharacts = 0xb1
	vpdProvisioning     = 0xb2
)

// vpdPages is the list VPD page 00h reports, ascending. Logical block
// provisioning (B2h) is there for thin LUs only: a fully provisioned LU
// reports LBPME=0 and has nothing to describe in it. Third-party copy (8Fh)
// describes the EXTENDED COPY copy manager (copyresults.go).
var vpdPages = []byte{vpdSupportedPages, vpdUnitSerial, vpdDeviceID, vpdThirdPartyCopy, vpdBlockLimits, vpdBlockDevCharacts}

var vpdPagesThin = append(append([]byte(nil), vpdPages...), vpdProvisioning)

// Version descriptors (SPC-4 table 144) claimed in standard INQUIRY data.
var versionDescriptors = []uint16{
	0x00a0, // SAM-5
	0x0960, // iSCSI
	0x0460, // SPC-4
	0x04c0, // SBC-3
}

// tpgsImplicit is the TPGS field of standard INQUIRY data: implicit ALUA.
// REPORT TARGET PORT GROUPS answers for it.
const tpgsImplicit = 0x01

const standardInquiryLen = 96

func inquiry(r request) error {
	evpd := r.cdb[1]&0x01 != 0
	page := r.cdb[2]
	alloc := int(getU16(r.cdb[3:]))
	if !evpd {
		if page != 0 {
			return invalidCDB(2, -1)
		}
		respond(r.cmd, r.res, standardInquiry(r.st), alloc)
		return nil
	}
	var data []byte
	switch page {
	case vpdSupportedPages:
		pages := vpdPages
		if r.st.thin {
			pages = vpdPagesThin
		}
		data = vpdPage(page, pages)
	case vpdUnitSerial:
		data = vpdPage(page, []byte(r.st.cfg.Serial))
	case vpdDeviceID:
		data = deviceIDPage(r.st, r.cmd.Nexus)
	case vpdThirdPartyCopy:
		data = thirdPartyCopyPage(r.st)
	case vpdBlockLimits:
		data = blockLimitsPage(r.st)
	case vpdBlockDevCharacts:
		data = blockCharacteristicsPage(r.st)
	case vpdProvisioning:
		if !r.st.thin {
			return invalidCDB(2, -1)
		}
		data = provisioningPage(r.st)
	default:
		return invalidCDB(2, -1)
	}
	respond(r.cmd, r.res, data, alloc)
	return nil
}

func standardInquiry(st *luState) []byte {
	b := make([]byte, standardInquiryLen)
	b[0] = 0x00 // peripheral qualifier 000b, direct access block device
	if st.cfg.Removable {
		b[1] = 0x80 // RMB
	}
	b[2] = 0x06        // SPC-4
	b[3] = 0x10 | 0x02 // HISUP, response data format 2
	b[4] = standardInquiryLen - 5
	// TPGS, and 3PC: EXTENDED COPY is supported (xcopy.go).
	b[5] = tpgsImplicit<<4 | 0x08
	b[6] = 0x10 // MULTIP: the LU is reachable through every node's target port
	b[7] = 0x02 // CMDQUE
	padASCII(b[8:16], st.cfg.VendorID)
	padASCII(b[16:32], st.cfg.ProductID)
	padASCII(b[32:36], st.cfg.Revision)
	for i, v := range versionDescriptors {
		putU16(b[58+2*i:], v)
	}
	return b
}

// vpdPage wraps a page body in the 4-byte VPD header.
func vpdPage(code byte, body []byte) []byte {
	b := make([]byte, 4+len(body))
	b[1] = code
	putU16(b[2:], uint16(len(body)))
	copy(b[4:], body)
	return b
}

// Designator fields of VPD page 83h (SPC-4 7.8.6).
const (
	codeBinary = 0x1
	codeASCII  = 0x2
	codeUTF8   = 0x3

	assocLU     = 0x0
	assocPort   = 0x1
	assocTarget = 0x2

	typeT10Vendor = 0x1
	typeNAA       = 0x3
	typeRelPort   = 0x4
	typeTPG       = 0x5
	typeSCSIName  = 0x8

	protocolISCSI = 0x5
)

func appendDesignator(b []byte, code, assoc, typ byte, id []byte) []byte {
	var h [4]byte
	h[0] = code
	h[1] = assoc<<4 | typ
	if assoc != assocLU {
		// Port and target designators name an iSCSI entity: set PIV and the
		// protocol identifier.
		h[0] |= protocolISCSI << 4
		h[1] |= 0x80
	}
	h[3] = byte(len(id))
	b = append(b, h[:]...)
	return append(b, id...)
}

// scsiName encodes a SCSI name string designator: null terminated and padded
// with nulls to a multiple of four bytes.
func scsiName(s string) []byte {
	n := (len(s) + 1 + 3) &^ 3
	b := make([]byte, n)
	copy(b, s)
	return b
}

// deviceIDPage builds VPD page 83h. The LU designators are the same on
// every node; the port designators describe the port the command came in on,
// which is how multipath initiators tell the paths apart.
func deviceIDPage(st *luState, n *Nexus) []byte {
	var body []byte
	body = appendDesignator(body, codeBinary, assocLU, typeNAA, st.naa[:])
	t10 := make([]byte, 8+len(st.cfg.DeviceID))
	padASCII(t10[:8], st.cfg.VendorID)
	copy(t10[8:], st.cfg.DeviceID)
	body = appendDesignator(body, codeASCII, assocLU, typeT10Vendor, t10)
	if n != nil {
		var port [4]byte
		putU16(port[2:], n.RelativePort)
		body = appendDesignator(body, codeBinary, assocPort, typeRelPort, port[:])
		var tpg [4]byte
		putU16(tpg[2:], n.PortGroup)
		body = appendDesignator(body, codeBinary, assocPort, typeTPG, tpg[:])
		if n.TargetPort != "" && len(n.TargetPort) < 252 {
			body = appendDesignator(body, codeUTF8, assocPort, typeSCSIName, scsiName(n.TargetPort))
		}
		if n.TargetName != "" && len(n.TargetName) < 252 {
			body = appendDesignator(body, codeUTF8, assocTarget, typeSCSIName, scsiName(n.TargetName))
		}
	}
	return vpdPage(vpdDeviceID, body)
}

// blockLimitsPage builds VPD page B0h with the SBC-3 page length (3Ch),
// filled with the SBC-4 fields: WSNZ is zero (WRITE SAME of zero blocks
// means to the last LBA), the UNMAP limits are set on thin LUs only (zero
// says UNMAP is not supported), and WRITE ATOMIC has no alignment or
// granularity requirement and no atomic boundaries.
func blockLimitsPage(st *luState) []byte {
	b := make([]byte, 0x40)
	b[1] = vpdBlockLimits
	putU16(b[2:], 0x3c)
	gran := uint32(4096) >> st.shift
	if gran == 0 {
		gran = 1
	}
	b[5] = maxCAWBlocks         // MAXIMUM COMPARE AND WRITE LENGTH
	putU16(b[6:], uint16(gran)) // OPTIMAL TRANSFER LENGTH GRANULARITY
	putU32(b[8:], MaxTransferBytes>>st.shift)
	putU32(b[12:], optimalTransferBytes>>st.shift)
	if st.thin {
		putU32(b[20:], maxUnmapLBACount)
		putU32(b[24:], maxUnmapDescriptors)
		putU32(b[28:], gran)       // OPTIMAL UNMAP GRANULARITY: a filesystem block
		putU32(b[32:], 0x80000000) // UGAVALID, UNMAP GRANULARITY ALIGNMENT 0
	}
	putU64(b[36:], maxWriteSameBlocks)       // MAXIMUM WRITE SAME LENGTH
	putU32(b[44:], maxAtomicBytes>>st.shift) // MAXIMUM ATOMIC TRANSFER LENGTH
	return b
}

// blockCharacteristicsPage builds VPD page B1h.
func blockCharacteristicsPage(st *luState) []byte {
	b := make([]byte, 0x40)
	b[1] = vpdBlockDevCharacts
	putU16(b[2:], 0x3c)
	if !st.cfg.Rotational {
		putU16(b[4:], 0x0001) // non-rotating medium
	}
	if blockEraseAvail(st) {
		// WABEREQ 01b: a read after BLOCK ERASE completes with GOOD.
		b[7] |= 0x40
	}
	if sanitizeAvail(st) {
		// WACEREQ 01b: a read after CRYPTOGRAPHIC ERASE completes with GOOD.
		b[7] |= 0x10
	}
	// A rotational LU reports rate 0, "not reported": the real spindle speed
	// (if any) is hidden behind the backing file.
	return b
}
