// Package hostile runs every case of docs/security.md, "Hostile
// initiators", against the real `hatarget serve` binary in a separate
// process, while a well-behaved session writes and verifies data, and
// checks that the node's goroutines, file descriptors and heap return to
// their baseline afterwards.
//
// The package holds only tests; this file exists so that it is a package
// with documentation even when built without them.
package hostile
