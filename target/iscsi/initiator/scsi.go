package initiator

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
)

// SCSI opcodes and statuses the convenience methods use.
const (
	opTestUnitReady   = 0x00
	opReadCapacity10  = 0x25
	opRead10          = 0x28
	opWrite10         = 0x2a
	opRead16          = 0x88
	opWrite16         = 0x8a
	opCompareAndWrite = 0x89
	opServiceAction16 = 0x9e
	saReadCapacity16  = 0x10

	StatusGood           = 0x00
	StatusCheckCondition = 0x02
	StatusBusy           = 0x08
	StatusTaskSetFull    = 0x28

	senseUnitAttention  = 0x06
	senseIllegalRequest = 0x05
)

// maxUARetries bounds how often a command is reissued after UNIT
// ATTENTION: a new I_T nexus usually gets one or two (power on, reset;
// capacity changed) before commands go through.
const maxUARetries = 4

// SCSIError is a command that completed with a status other than GOOD.
type SCSIError struct {
	Opcode byte
	Status byte
	Sense  []byte
}

// SenseKey decodes fixed (0x70/0x71) or descriptor (0x72/0x73) sense data.
func (e *SCSIError) SenseKey() (key, asc, ascq byte) {
	s := e.Sense
	if len(s) < 1 {
		return 0, 0, 0
	}
	switch s[0] & 0x7f {
	case 0x70, 0x71:
		if len(s) >= 14 {
			return s[2] & 0x0f, s[12], s[13]
		}
		if len(s) >= 3 {
			return s[2] & 0x0f, 0, 0
		}
	case 0x72, 0x73:
		if len(s) >= 4 {
			return s[1] & 0x0f, s[2], s[3]
		}
	}
	return 0, 0, 0
}

func (e *SCSIError) Error() string {
	if e.Status != StatusCheckCondition {
		return fmt.Sprintf("SCSI command %#02x: status %#02x", e.Opcode, e.Status)
	}
	key, asc, ascq := e.SenseKey()
	return fmt.Sprintf("SCSI command %#02x: CHECK CONDITION, sense key %#x, ASC/ASCQ %#02x/%#02x", e.Opcode, key, asc, ascq)
}

func (e *SCSIError) unitAttention() bool {
	key, _, _ := e.SenseKey()
	return e.Status == StatusCheckCondition && key == senseUnitAttention
}

// run issues a command and turns any status other than GOOD into a
// *SCSIError, retrying unit attentions.
func (s *Session) run(ctx context.Context, lun uint64, cdb, out, in []byte) (Response, error) {
	for attempt := 0; ; attempt++ {
		r, err := s.Do(ctx, lun, cdb, out, in)
		if err != nil {
			return r, err
		}
		if r.Status == StatusGood {
			return r, nil
		}
		serr := &SCSIError{Opcode: cdb[0], Status: r.Status, Sense: r.Sense}
		if serr.unitAttention() && attempt < maxUARetries {
			continue
		}
		return r, serr
	}
}

// Read reads blocks logical blocks of blockSize bytes at lba into buf,
// which must be exactly that long. It uses READ(10) when the LBA and
// length fit, READ(16) otherwise.
func (s *Session) Read(ctx context.Context, lun, lba uint64, blocks uint32, blockSize int, buf []byte) error {
	if len(buf) != int(blocks)*blockSize {
		return fmt.Errorf("initiator: Read of %d blocks of %d bytes into a %d-byte buffer", blocks, blockSize, len(buf))
	}
	var cdb [16]byte
	n := rwCDB(&cdb, false, lba, blocks)
	if _, err := s.run(ctx, lun, cdb[:n], nil, buf); err != nil {
		return fmt.Errorf("read LBA %d+%d: %w", lba, blocks, err)
	}
	return nil
}

// Write writes buf (blocks*blockSize bytes) at lba with WRITE(10) or
// WRITE(16).
func (s *Session) Write(ctx context.Context, lun, lba uint64, blocks uint32, blockSize int, buf []byte) error {
	if len(buf) != int(blocks)*blockSize {
		return fmt.Errorf("initiator: Write of %d blocks of %d bytes from a %d-byte buffer", blocks, blockSize, len(buf))
	}
	var cdb [16]byte
	n := rwCDB(&cdb, true, lba, blocks)
	if _, err := s.run(ctx, lun, cdb[:n], buf, nil); err != nil {
		return fmt.Errorf("write LBA %d+%d: %w", lba, blocks, err)
	}
	return nil
}

// CompareAndWrite atomically replaces blocks at lba that still hold
// compare with write (COMPARE AND WRITE, what VMware's ATS locking uses).
// A block holding anything else fails with a *SCSIError whose sense is
// MISCOMPARE.
func (s *Session) CompareAndWrite(ctx context.Context, lun, lba uint64, blocks uint8, blockSize int, compareAndWrite []byte) error {
	if len(compareAndWrite) != 2*int(blocks)*blockSize {
		return fmt.Errorf("initiator: CompareAndWrite of %d blocks of %d bytes needs %d bytes, got %d",
			blocks, blockSize, 2*int(blocks)*blockSize, len(compareAndWrite))
	}
	var cdb [16]byte
	cdb[0] = opCompareAndWrite
	binary.BigEndian.PutUint64(cdb[2:], lba)
	cdb[13] = blocks
	if _, err := s.run(ctx, lun, cdb[:], compareAndWrite, nil); err != nil {
		return fmt.Errorf("compare and write LBA %d+%d: %w", lba, blocks, err)
	}
	return nil
}

// rwCDB builds the shortest READ/WRITE CDB that can address lba and
// blocks, as Linux sd does.
func rwCDB(cdb *[16]byte, write bool, lba uint64, blocks uint32) int {
	if lba <= 0xffffffff && blocks <= 0xffff {
		cdb[0] = opRead10
		if write {
			cdb[0] = opWrite10
		}
		binary.BigEndian.PutUint32(cdb[2:], uint32(lba))
		binary.BigEndian.PutUint16(cdb[7:], uint16(blocks))
		return 10
	}
	cdb[0] = opRead16
	if write {
		cdb[0] = opWrite16
	}
	binary.BigEndian.PutUint64(cdb[2:], lba)
	binary.BigEndian.PutUint32(cdb[10:], blocks)
	return 16
}

// Capacity is a logical unit's size.
type Capacity struct {
	Blocks    uint64 // number of logical blocks
	BlockSize uint32 // bytes per logical block
}

// Bytes is the capacity in bytes.
func (c Capacity) Bytes() uint64 { return c.Blocks * uint64(c.BlockSize) }

// ReadCapacity asks READ CAPACITY(16), falling back to READ CAPACITY(10)
// for a device that does not know the 16-byte form.
func (s *Session) ReadCapacity(ctx context.Context, lun uint64) (Capacity, error) {
	var buf [32]byte
	cdb := [16]byte{0: opServiceAction16, 1: saReadCapacity16, 13: byte(len(buf))}
	_, err := s.run(ctx, lun, cdb[:], nil, buf[:])
	var serr *SCSIError
	if errors.As(err, &serr) {
		if key, _, _ := serr.SenseKey(); key == senseIllegalRequest {
			return s.readCapacity10(ctx, lun)
		}
	}
	if err != nil {
		return Capacity{}, fmt.Errorf("READ CAPACITY(16): %w", err)
	}
	return Capacity{
		Blocks:    binary.BigEndian.Uint64(buf[0:]) + 1,
		BlockSize: binary.BigEndian.Uint32(buf[8:]),
	}, nil
}

func (s *Session) readCapacity10(ctx context.Context, lun uint64) (Capacity, error) {
	var buf [8]byte
	cdb := [10]byte{0: opReadCapacity10}
	if _, err := s.run(ctx, lun, cdb[:], nil, buf[:]); err != nil {
		return Capacity{}, fmt.Errorf("READ CAPACITY(10): %w", err)
	}
	return Capacity{
		Blocks:    uint64(binary.BigEndian.Uint32(buf[0:])) + 1,
		BlockSize: binary.BigEndian.Uint32(buf[4:]),
	}, nil
}

// TestUnitReady also consumes pending unit attentions, so a benchmark can
// start without them.
func (s *Session) TestUnitReady(ctx context.Context, lun uint64) error {
	cdb := [6]byte{0: opTestUnitReady}
	if _, err := s.run(ctx, lun, cdb[:], nil, nil); err != nil {
		return fmt.Errorf("TEST UNIT READY: %w", err)
	}
	return nil
}
