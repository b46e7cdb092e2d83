// Package scstconf reads and writes SCST's /etc/scst.conf, so that an
// existing SCST installation can be imported into hatarget and a hatarget
// configuration can be exported back in the same format.
//
// The package is a pure model: Parse turns bytes into a *File and Format
// turns a *File back into bytes that Parse reads into an equal model (see
// File.Equal). Only ParseFile touches the file system.
//
// # Syntax
//
// Blocks are "KEYWORD name { ... }" with the brace on the same line or the
// next one; a block may also sit on one line ("LUN 2 blockio1 { read_only 1 }").
// Attributes are "name value" lines; several words after the name are joined
// with single spaces, and a double-quoted word keeps its spaces. An unescaped
// "#" outside quotes starts a comment. A backslash before one of # " \ { }
// makes that character literal; any other backslash is kept as is, so paths
// need no escaping.
//
// # What is accepted
//
// Handlers vdisk_fileio, vdisk_blockio and vdisk_nullio are supported.
// Pass-through handlers (dev_disk, dev_tape, ...) are rejected because a
// userspace target has no local SCSI device to pass commands to; other
// handlers (vcdrom, ...) are rejected as unsupported. Only TARGET_DRIVER
// iscsi is read; other target drivers are skipped with a warning. Unknown
// attributes of devices, targets, groups, LUNs and ALUA groups produce a
// warning and are kept in the element's Extra list so that an export can
// write them back. SCST core attributes at the top level (threads, ...) are
// dropped with a warning. Structural keywords in the wrong place (an
// INITIATOR outside a GROUP, say) are errors, because silently ignoring
// access control is worse than refusing the file.
//
// # Defaults
//
// Defaults follow SCST so that an imported file behaves as it did there:
// blocksize 512; rotational on; nv_cache, write_through, o_direct,
// read_only, removable and thin_provisioned off; target and driver
// "enabled" off; target group state "active". A vdisk_nullio device without
// size or size_mb gets SCST's own nullio size, DefaultNullIOSize (2.5 TiB).
// For vdisk_fileio and vdisk_blockio a Size of 0 means "the size of the
// backing file or device". RelTgtID 0 means "let the target pick one".
//
// # Errors
//
// Parse is all-or-nothing: any error yields a nil *File. Errors are *Error
// values whose text is "file:line:col: message"; columns count bytes from 1.
// Problems with a single value (a bad number, a bad boolean, a blocksize
// other than 512 or 4096) point at the value; problems that involve a whole
// element (a duplicate name, a LUN naming an unknown device, a device
// without a filename) point at the keyword that starts the element.
package scstconf
